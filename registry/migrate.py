"""``cifar10 registry migrate``: a version registered before versions were MLflow Models, made one.

A version whose source is a run's folder (``runs:/<run>/export/<precision>``) keeps serving as it is
(``sync`` reads both layouts). Migrating it logs the very same file as an MLflow Model
(:mod:`mlmodel.logged`) into the run that exported it, and registers that as a new version with
the old one's tags plus ``migrated_from``. Its facts come from the export manifest the run logged,
found by the file's SHA-256: where no manifest names these bytes, the migration is refused, never
guessed. Each alias the old version holds moves to the new one (the alias log records the move as
``migrate``, and the alias history takes the new number in the old one's place, so a rollback goes
where it went before). Idempotent: a version already migrated names its successor.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import ValidationError

from common.export_manifest import ExportManifest
from common.params import ServingConfig
from registry import aliases, release_record, store
from registry.store import ArtifactAltered, RegistryError, call_registry

MIGRATED_FROM = "migrated_from"


@dataclasses.dataclass(frozen=True)
class Migrated:
    name: str
    version: int
    new_version: int | None
    status: str
    aliases: tuple[str, ...] = ()


def _export_manifest(run_id: str, where: str) -> ExportManifest:
    import mlflow

    try:
        raw = mlflow.artifacts.load_dict(f"runs:/{run_id}/export/manifest.json")
    except Exception as exc:
        raise RegistryError(
            f"{where}: run {run_id} has no export/manifest.json to migrate from ({exc})"
        ) from None
    try:
        return ExportManifest.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(
            f"{where}: run {run_id}'s export/manifest.json is not one this tool reads: {exc}"
        ) from None


def old_versions(name: str) -> list[int]:
    """The versions of ``name`` registered before versions were MLflow Models (a run's files)."""
    c = store.client()
    found = call_registry(f"listing {name}", c.search_model_versions, f"name='{name}'")
    return sorted(int(v.version) for v in found if not str(v.source).startswith("models:/"))


def migrate(name: str, version: int, cache: Path, prepared: Path | None, serving: ServingConfig) -> Migrated:
    """Re-register ``name`` v``version`` as an MLflow Model; see the module docstring."""
    import mlflow

    from mlmodel.logged import log_form
    from registry.version_fetch import fetch_model

    where = f"{name} v{version}"
    c = store.client()
    mv = store.model_version(c, name, version)
    if str(mv.source).startswith("models:/"):
        return Migrated(name, version, None, "already an MLflow Model")
    successors = [
        v
        for v in call_registry(f"listing {name}", c.search_model_versions, f"name='{name}'")
        if v.tags.get(MIGRATED_FROM) == str(version)
    ]
    if successors:  # finish what an interrupted migration left: the link and the aliases (both repeatable)
        successor = int(successors[0].version)
        store.link_logged_model(c, str(successors[0].source).removeprefix("models:/"), name, successor)
        moved = aliases.carry(name, version, successor)
        return Migrated(name, version, successor, "already migrated", tuple(moved))
    if release_record.active(name) is not None:
        raise RegistryError(f"{where}: a release is in progress on {name}; migrate after it ends")
    fetched = fetch_model(name, version, cache)  # verified against the version's sha256 tag
    manifest = _export_manifest(mv.run_id, where)
    sha = mv.tags["sha256"]
    art = next((a for a in manifest.artifacts if a.sha256 == sha and a.passed), None)
    if art is None:
        raise ArtifactAltered(
            f"{where}: the export manifest of run {mv.run_id} names no passed file with its SHA-256 "
            f"{sha[:12]}...; the bytes differ from what was exported, so it is not migrated"
        )
    here = art.model_copy(
        update={
            "file": fetched.artifact.name,
            "quality_reference": fetched.quality_reference.name if fetched.quality_reference else None,
            "quality_sha256": art.quality_sha256 if fetched.quality_reference else None,
        }
    )
    data = prepared if prepared is not None and (prepared / "meta.json").is_file() else None
    run = c.get_run(mv.run_id).info
    try:  # logging into the old run reopens it; its status and end time are put back, whatever happens
        with mlflow.start_run(run_id=mv.run_id):
            model_id = log_form(fetched.artifact.parent, manifest, here, data, None, serving, log_split=False)
    finally:
        c.set_terminated(mv.run_id, status=run.status, end_time=run.end_time)
    new = call_registry(
        f"registering {name}",
        c.create_model_version,
        name,
        f"models:/{model_id}",
        run_id=mv.run_id,
        tags=dict(mv.tags) | {MIGRATED_FROM: str(version)},
        model_id=model_id,
    )
    store.link_logged_model(c, model_id, name, int(new.version))
    fetch_model(name, int(new.version), cache)  # it serves (files, facts, tags agree) before any alias moves
    moved = aliases.carry(name, version, int(new.version))
    return Migrated(name, version, int(new.version), "migrated", tuple(moved))
