"""The demo's promotion rule: a new version takes ``production`` only through the release gate.

On an empty registry the first version is promoted, as a first run expects. Once ``production``
names a version, the new one is judged by the same checks as ``cifar10 release start`` (parity, and
accuracy against production within ``release.accuracy_margin``, by MLflow's model validation), and
promoted only if it passes. Otherwise production stays, with one line saying why. The live check of
the release gate is left to a release: the demo's server is not up yet when it decides, and the
version it would check is the one it is about to serve anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.params import ReleaseConfig


@dataclass(frozen=True)
class Adoption:
    """What the demo did with one newly registered version."""

    name: str
    version: int
    production_before: int | None
    promoted: bool
    reason: str

    @property
    def production(self) -> int | None:
        return self.version if self.promoted else self.production_before

    def line(self) -> str:
        if self.production_before == self.version:
            return f"{self.name}: production already is v{self.version}"
        if self.promoted:
            before = f" (was v{self.production_before})" if self.production_before is not None else ""
            return f"{self.name}: production -> v{self.version}{before}: {self.reason}"
        return f"{self.name}: production stays v{self.production_before}, not v{self.version}: {self.reason}"


def adopt(
    name: str,
    version: int,
    cfg: ReleaseConfig,
    prepared: Path = Path("data/prepared"),
    cache: Path = Path("artifacts/registry_cache"),
) -> Adoption:
    """Promote ``name`` v``version`` to production if production is unset or the release gate passes.

    ``prepared`` and ``cache``: where production is scored on the new version's test rows when the
    two were scored on different data (the release gate compares like with like).
    """
    from registry import aliases, release_record, store, tags
    from release import gate
    from release.baseline import ProductionScorer

    current = aliases.alias_version(name, "production")
    if current is None:
        aliases.promote(name, "production", version)
        return Adoption(name, version, None, True, "the first version: nothing served before")
    if current == version:
        return Adoption(name, version, current, False, "it already is production")
    record = release_record.active(name)
    if record is not None:
        why = (
            f"a release of {record.candidate_name} v{record.candidate_version} is at step {record.label}; "
            "it decides production (`cifar10 release status`)"
        )
        return Adoption(name, version, current, False, why)
    candidate = aliases.resolve(name, version=version)
    production = aliases.resolve(name, "production")
    model_tags = dict(store.registered_model(store.client(), name).tags)
    result = gate.offline(
        candidate,
        production,
        cfg,
        tags.version_classes(candidate.tags, model_tags, name),
        tags.version_classes(production.tags, model_tags, name),
        ProductionScorer(name, production.version, prepared, cache),
    )
    for check in result.checks:
        if not check.passed:
            detail = check.detail.split(": ", 1)[0] if check.name == "accuracy" else check.detail
            return Adoption(name, version, current, False, f"the release gate's {check.name} check: {detail}")
    aliases.promote(name, "production", version)
    return Adoption(
        name, version, current, True, f"passed the release gate ({result['accuracy'].detail.split(': ')[0]})"
    )
