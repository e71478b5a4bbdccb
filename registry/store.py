"""Registering exported artifacts and moving aliases, on top of ``MlflowClient``.

Alias history lives in registered-model tags (``alias_history.<alias>``: a JSON stack of version
numbers), so ``rollback`` is defined any number of times and survives across machines that share
the tracking server.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common import tracking
from common.fsutil import sha256_file
from registry.config import RegistryConfig

log = logging.getLogger(__name__)
HISTORY_TAG = "alias_history.{alias}"


class RegistryError(RuntimeError):
    """A registry request that cannot be satisfied; the message says what is missing."""


@dataclass(frozen=True)
class Resolved:
    name: str
    version: int
    alias: str | None  # None when the alias was unset and the newest version was taken instead
    source: str
    tags: dict[str, str]


def client() -> MlflowClient:
    return MlflowClient(tracking.configure())


def register_manifest(manifest_path: Path, cfg: RegistryConfig, metrics: dict | None = None) -> list[dict]:
    """Register every passed artifact of an export manifest as a model version (idempotent).

    A file whose checksum no longer matches the manifest is refused: it is not what was validated.
    Returns one row per artifact: name, version, and whether it was created or already present.
    """
    manifest = json.loads(manifest_path.read_text())
    folder, run_id = manifest_path.parent, manifest.get("mlflow_run_id")
    if not run_id:
        raise RegistryError(f"{manifest_path} names no MLflow run; re-run the export stage")
    c, rows = client(), []
    for art in manifest["artifacts"]:
        name = cfg.registered_name(art["precision"])
        if not art["passed"]:
            log.warning(
                "%s failed its parity gate (%s); not registered", art["file"], art["parity"]["failures"]
            )
            rows.append({"name": name, "version": None, "status": "rejected by parity gate"})
            continue
        path = folder / art["file"]
        if sha256_file(path) != art["sha256"]:
            raise RegistryError(f"{path} does not match the checksum its parity report validated; re-export")
        _ensure_model(c, name, manifest, art["precision"])
        existing = [
            v for v in c.search_model_versions(f"name='{name}'") if v.tags.get("sha256") == art["sha256"]
        ]
        if existing:
            rows.append({"name": name, "version": int(existing[0].version), "status": "already registered"})
            continue
        parity = art["parity"]
        tags = {
            "precision": art["precision"],
            "format": art["format"],
            "file": Path(art["file"]).name,
            "sha256": art["sha256"],
            "run_id": run_id,
            "git_commit": manifest["source"]["git_commit"],
            "source_sha256": manifest["source"]["sha256"],
            "parity_passed": "true",
            "parity_max_abs_logit": f"{parity['max_abs_logit']:.3e}",
            "parity_agreement": f"{parity['top1_agreement']:.4f}",
            "parity_accuracy": f"{parity['accuracy']:.4f}",
            "export_command": manifest.get("command", ""),
        }
        if metrics and "accuracy" in metrics:
            tags["test_accuracy"] = f"{metrics['accuracy']:.4f}"
        mv = c.create_model_version(
            name, f"runs:/{run_id}/export/{art['precision']}", run_id=run_id, tags=tags
        )
        rows.append({"name": name, "version": int(mv.version), "status": "created"})
    return rows


def _ensure_model(c: MlflowClient, name: str, manifest: dict, precision: str) -> None:
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(
            name,
            tags={
                "classes": json.dumps(manifest["classes"]),
                "mean": json.dumps(manifest["mean"]),
                "std": json.dumps(manifest["std"]),
                "input": manifest["io"]["input"],
                "output": manifest["io"]["output"],
                "precision": precision,
            },
            description=f"WideResNet CIFAR-10 classifier, {precision}; versions come from the export stage",
        )


def _version(c: MlflowClient, name: str, version: int):
    try:
        return c.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"{name} has no version {version}") from exc


def _history(c: MlflowClient, name: str, alias: str) -> list[int]:
    try:
        tags = c.get_registered_model(name).tags
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {name!r}") from exc
    return json.loads(tags.get(HISTORY_TAG.format(alias=alias), "[]"))


def promote(name: str, alias: str, version: int) -> dict:
    """Point ``alias`` at ``version`` and push it on the alias history."""
    c = client()
    mv = _version(c, name, version)
    if mv.tags.get("parity_passed") != "true":
        raise RegistryError(f"{name} v{version} has no passed parity gate; it cannot be promoted")
    history = _history(c, name, alias)
    previous = history[-1] if history else None
    if previous != version:
        history.append(version)
    c.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history))
    c.set_registered_model_alias(name, alias, str(version))
    return {"name": name, "alias": alias, "version": version, "previous": previous}


def rollback(name: str, alias: str = "production") -> dict:
    """Re-point ``alias`` at the version it named before the current one (repeatable)."""
    c = client()
    history = _history(c, name, alias)
    if len(history) < 2:
        raise RegistryError(f"{name}@{alias} has no earlier version to roll back to (history: {history})")
    current = history.pop()
    c.set_registered_model_tag(name, HISTORY_TAG.format(alias=alias), json.dumps(history))
    c.set_registered_model_alias(name, alias, str(history[-1]))
    return {"name": name, "alias": alias, "version": history[-1], "rolled_back_from": current}


def resolve(name: str, alias: str = "production", version: int | None = None) -> Resolved:
    """The version ``alias`` names; without the alias, the newest version, with a warning."""
    c = client()
    if version is not None:
        mv = _version(c, name, version)
        return Resolved(name, int(mv.version), None, mv.source, dict(mv.tags))
    try:
        mv = c.get_model_version_by_alias(name, alias)
        return Resolved(name, int(mv.version), alias, mv.source, dict(mv.tags))
    except MlflowException:
        pass
    versions = c.search_model_versions(f"name='{name}'")
    if not versions:
        raise RegistryError(f"no registered model {name!r} with any version; run the register stage first")
    newest = max(versions, key=lambda v: int(v.version))
    log.warning("%s has no alias %r; falling back to the newest version, %s", name, alias, newest.version)
    return Resolved(name, int(newest.version), None, newest.source, dict(newest.tags))


def describe(name: str) -> dict:
    """Versions, aliases and alias history of one registered model."""
    c = client()
    try:
        rm = c.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {name!r}") from exc
    versions = sorted(c.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    by_version: dict[int, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(int(v), []).append(alias)
    return {
        "name": name,
        "aliases": {a: int(v) for a, v in (rm.aliases or {}).items()},
        "history": {
            k.split(".", 1)[1]: json.loads(v) for k, v in rm.tags.items() if k.startswith("alias_history.")
        },
        "versions": [
            {
                "version": int(v.version),
                "aliases": by_version.get(int(v.version), []),
                "run_id": v.run_id,
                "precision": v.tags.get("precision"),
                "parity_agreement": v.tags.get("parity_agreement"),
                "test_accuracy": v.tags.get("test_accuracy"),
                "sha256": v.tags.get("sha256", "")[:12],
            }
            for v in versions
        ],
    }


def list_models(cfg: RegistryConfig) -> list[dict]:
    c = client()
    return [describe(rm.name) for rm in c.search_registered_models(f"name LIKE '{cfg.model_prefix}-%'")]
