"""What the registry holds, described: each version's accuracy, parity, source and alias periods.

Read-only. ``cifar10 registry list``/``show`` print it as tables (:mod:`registry.tables`) or, with
``--json``, as the dictionaries built here.
"""

from __future__ import annotations

import json
import time

from common.params import RegistryConfig
from registry import tags as tag_values
from registry.aliases import ALIASES, read_log
from registry.store import call_registry, client, registered_model
from registry.views import AliasPeriod, ModelDescription, VersionRow, VersionSource


def version_source(tags: dict[str, str]) -> VersionSource:
    """Where a version came from: the pipeline's training run, or an outside weights file and its hash."""
    if tags.get("source_run_id"):
        return {
            "kind": "training run",
            "run_id": tags["source_run_id"],
            "weights_sha256": tags.get("source_sha256"),
        }
    return {
        "kind": "weights file",
        "file": tags.get("source_weights") or "?",
        "sha256": tags.get("source_sha256"),
    }


def alias_periods(rm, version: int) -> list[AliasPeriod]:
    """When ``version`` held each alias: ``[{"alias", "from", "until", "ended_by"}]`` from the alias logs.

    ``until`` is ``None`` while it still holds it. Moves made before the log existed are not known.
    """
    out = []
    for alias in ALIASES:
        events = read_log(rm, alias)
        for i, event in enumerate(events):
            if event["version"] != version:
                continue
            after = events[i + 1] if i + 1 < len(events) else None
            out.append(
                {
                    "alias": alias,
                    "from": event["at"],
                    "by": event["action"],
                    "until": after["at"] if after else None,
                    "ended_by": after["action"] if after else None,
                }
            )
    return sorted(out, key=lambda p: p["from"])


def describe(name: str) -> ModelDescription:
    """Versions, aliases and alias history of one registered model: accuracy, parity and source of each."""
    c = client()
    rm = registered_model(c, name)
    versions = sorted(
        call_registry(f"listing {name}", c.search_model_versions, f"name='{name}'"),
        key=lambda v: int(v.version),
    )
    by_version: dict[int, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(int(v), []).append(alias)
    rows: list[VersionRow] = []
    for v in versions:
        measured = tag_values.accuracy(v.tags)
        rows.append(
            {
                "version": int(v.version),
                "aliases": by_version.get(int(v.version), []),
                "run_id": v.run_id,
                "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.creation_timestamp / 1000)),
                "precision": v.tags.get("precision"),
                "parity_passed": v.tags.get("parity_passed") == "true",
                "parity_agreement": v.tags.get("parity_agreement"),
                "parity_max_abs_logit": v.tags.get("parity_max_abs_logit"),
                "test_accuracy": f"{measured[0]:.4f}" if measured else "unknown",
                "test_images": measured[1] if measured else None,
                "test_runtime": v.tags.get("test_runtime") if measured else None,
                "sha256": v.tags.get("sha256", "")[:12],
                "source": version_source(v.tags),
                "registered_from": str(v.source or ""),
                "alias_periods": alias_periods(rm, int(v.version)),
            }
        )
    return {
        "name": name,
        "aliases": {a: int(v) for a, v in (rm.aliases or {}).items()},
        "history": {
            k.split(".", 1)[1]: json.loads(v) for k, v in rm.tags.items() if k.startswith("alias_history.")
        },
        "versions": rows,
    }


def list_models(cfg: RegistryConfig) -> list[ModelDescription]:
    c = client()
    found = call_registry("listing models", c.search_registered_models, f"name LIKE '{cfg.model_prefix}-%'")
    return [describe(rm.name) for rm in found]
