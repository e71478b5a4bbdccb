"""The serving choice ``cifar10 optimize`` records: which form the ensemble routes to, batched how.

The choice is a tag (``serving_choice``, JSON) on the production version of the chosen form, so it
travels with what it was measured on. :mod:`registry.sync` honours it while it still describes what
serves: the chosen version is still that form's ``production`` and the fp32 baseline it was judged
against is still fp32's ``production``. Promote either and the choice lapses (sync warns and goes back
to ``params.yaml``): a new version has not been measured, and nothing it was not measured on may
change what serves. ``cifar10 optimize --clear`` removes it.

Only one choice stands at a time: :func:`record` removes the tag from every other form's production
version in the same registry call sequence, before it writes the new one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from common.params import RegistryConfig
from registry import aliases, store

log = logging.getLogger(__name__)
TAG = "serving_choice"


@dataclass(frozen=True)
class ServingChoice:
    """What serves the ensemble, with the settings that made it fastest, and what it was judged on."""

    precision: str
    version: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instance_count: int
    baseline_version: int  # the fp32 production version its accuracy was compared with
    throughput_img_s: float
    p99_ms: float
    chosen_at: str
    run_id: str = ""
    decided_by: str = "cifar10-optimize"  # or cifar10 release, when a release promoted another form

    def to_tag(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_tag(cls, text: str, where: str) -> ServingChoice:
        from registry.tags import TagError

        try:
            data = json.loads(text)
            choice = cls(**{**data, "preferred_batch_sizes": tuple(data["preferred_batch_sizes"])})
        except (ValueError, TypeError, KeyError) as exc:
            raise TagError(f"{where}: tag {TAG} is not a serving choice: {exc}") from None
        sizes, delay, count = choice.preferred_batch_sizes, choice.max_queue_delay_us, choice.instance_count
        if not (all(isinstance(b, int) and b > 0 for b in sizes) and int(delay) >= 0 and int(count) >= 1):
            raise TagError(f"{where}: tag {TAG} has out-of-range settings: {text}")
        return choice


def candidates(cfg: RegistryConfig, precisions: tuple[str, ...]) -> list[str]:
    """Every form whose registered model exists; a form that was never registered is not an error."""
    c, names = store.client(), []
    for precision in precisions:
        found = store.call_registry(
            "listing registered models",
            c.search_registered_models,
            f"name='{cfg.registered_name(precision)}'",
        )
        if found:
            names.append(precision)
    return names


def read(cfg: RegistryConfig, precisions: tuple[str, ...]) -> ServingChoice | None:
    """The standing choice, or ``None``; a choice that no longer describes what serves is ignored."""
    found: list[ServingChoice] = []
    for precision in candidates(cfg, precisions):
        name = cfg.registered_name(precision)
        version = aliases.alias_version(name, "production")
        if version is None:
            continue
        text = aliases.resolve(name, version=version).tags.get(TAG)
        if text:
            found.append(ServingChoice.from_tag(text, f"{name} v{version}"))
    if not found:
        return None
    choice = max(found, key=lambda c: c.chosen_at)
    if len(found) > 1:
        log.warning("several serving choices are tagged; using the newest (%s)", choice.chosen_at)
    baseline = aliases.alias_version(cfg.registered_name("fp32"), "production")
    if baseline != choice.baseline_version:
        log.warning(
            "the serving choice (%s v%d) was judged against fp32 v%d, but fp32's production is v%s: "
            "ignored until `cifar10 optimize` runs again",
            choice.precision,
            choice.version,
            choice.baseline_version,
            baseline,
        )
        return None
    return choice


def _set(name: str, version: int, value: str | None) -> None:
    c = store.client()
    if value is None:
        store.call_registry(
            f"untagging {name} v{version}", c.delete_model_version_tag, name, str(version), TAG
        )
    else:
        store.call_registry(
            f"tagging {name} v{version}", c.set_model_version_tag, name, str(version), TAG, value
        )


def clear(cfg: RegistryConfig, precisions: tuple[str, ...], keep: tuple[str, int] | None = None) -> list[str]:
    """Remove the tag from every form's production version (except ``keep``); returns what it touched."""
    touched = []
    for precision in candidates(cfg, precisions):
        name = cfg.registered_name(precision)
        version = aliases.alias_version(name, "production")
        if version is None or (name, version) == keep:
            continue
        if TAG in aliases.resolve(name, version=version).tags:
            _set(name, version, None)
            touched.append(f"{name} v{version}")
    return touched


def record(cfg: RegistryConfig, precisions: tuple[str, ...], choice: ServingChoice) -> str:
    """Make ``choice`` the standing one; refused if its version is not that form's production."""
    name = cfg.registered_name(choice.precision)
    if aliases.alias_version(name, "production") != choice.version:
        raise store.RegistryError(f"{name} v{choice.version} is not production any more; nothing recorded")
    clear(cfg, precisions, keep=(name, choice.version))
    _set(name, choice.version, choice.to_tag())
    return f"{name} v{choice.version}"
