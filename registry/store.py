"""The MLflow Model Registry as this project uses it: access, errors, registration, description.

Moving aliases (what serves) is :mod:`registry.aliases`; this module registers the versions they
can point at. :mod:`registry.catalog` describes what is there.

Two kinds of failure are kept apart, because callers act on them differently: :class:`RegistryError`
(the request names something that does not exist: exit code 5) and :class:`RegistryUnavailable`
(the tracking server failed or could not be reached: exit code 3). Neither is ever turned into a
guess: :func:`resolve` falls back to the newest version only when a read-only caller asks for it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common import tracking
from common.exit_codes import Failed, IntegrityError, NotFound, Unavailable
from common.export_manifest import ExportManifest
from common.fsutil import sha256_file
from common.params import RegistryConfig
from registry.version_record import RegisteredVersion

log = logging.getLogger(__name__)


class RegistryError(NotFound):
    """A registry request that cannot be satisfied; the message says what is missing (exit code 5)."""


class RegistryUnavailable(Unavailable, RegistryError):
    """The tracking server failed or is unreachable; nothing was decided from a partial answer (3)."""


class ArtifactAltered(IntegrityError, RegistryError):
    """A registered artifact is not what its version recorded: checksum, or a path leaving its folder (8)."""


class PromotionRefused(Failed, RegistryError):
    """The version exists but may not serve (no passed parity gate): exit code 1."""


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def call_registry(what: str, fn, *args, missing: str | None = None, **kwargs):
    """``fn(*args)``; MLflow's "does not exist" becomes ``RegistryError(missing)``, all else unavailable."""
    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        if missing is not None and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(missing) from exc
        raise RegistryUnavailable(f"registry error while {what}: {first_line(exc)}") from exc


def client() -> MlflowClient:
    return MlflowClient(tracking.configure())


def register_manifest(manifest_path: Path, cfg: RegistryConfig) -> list[dict]:
    """Register every passed artifact of an export manifest as a model version (idempotent).

    A file whose checksum no longer matches the manifest is refused: it is not what was validated.
    Each version is tagged with the accuracy its own artifact scored at export, through its own
    runtime (``test_accuracy``, ``test_images``); a manifest without that figure leaves it unknown.
    Returns one row per artifact: name, version, and whether it was created or already present.
    """
    manifest = ExportManifest.read(manifest_path)
    folder, run_id = manifest_path.parent, manifest.mlflow_run_id
    if not run_id:
        raise RegistryError(f"{manifest_path} names no MLflow run; re-run the export stage")
    c, rows = client(), []
    for art in manifest.artifacts:
        name = cfg.registered_name(art.precision)
        if not art.passed:
            log.warning("%s failed its parity gate (%s); not registered", art.file, art.parity.failures)
            rows.append({"name": name, "version": None, "status": "rejected by parity gate"})
            continue
        path = folder / art.file
        if sha256_file(path) != art.sha256:
            raise ArtifactAltered(
                f"{path} does not match the checksum its parity report validated; re-export"
            )
        _ensure_model(c, name, manifest, art.precision)
        existing = [
            v
            for v in call_registry("listing versions", c.search_model_versions, f"name='{name}'")
            if v.tags.get("sha256") == art.sha256
        ]
        if existing:
            rows.append({"name": name, "version": int(existing[0].version), "status": "already registered"})
            continue
        if art.model_id:  # an MLflow Model (mlmodel.logged): registered from models:/<model_id>
            _check_logged_model(c, art.model_id, art.sha256, name)
            source = f"models:/{art.model_id}"
        else:  # a manifest from before versions were MLflow Models: the run's files, as then
            log.warning("%s: no logged model in the manifest; registering the run's file", art.file)
            source = f"runs:/{run_id}/export/{art.precision}"
        mv = call_registry(
            f"registering {name}",
            c.create_model_version,
            name,
            source,
            run_id=run_id,
            tags=RegisteredVersion.from_export(manifest, art, run_id).to_tags(),
            model_id=art.model_id,
        )
        if art.model_id:
            link_logged_model(c, art.model_id, name, int(mv.version))
        rows.append({"name": name, "version": int(mv.version), "status": "created"})
    return rows


def link_logged_model(c: MlflowClient, model_id: str, name: str, version: int) -> None:
    """Record the version on its logged model, as ``mlflow.register_model`` does (the UI's link)."""
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    model = call_registry(f"reading logged model {model_id}", c.get_logged_model, model_id)
    try:
        versions = json.loads(model.tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
    except ValueError:
        versions = []
    versions = versions if isinstance(versions, list) else []
    known = {(str(v.get("name")), str(v.get("version"))) for v in versions if isinstance(v, dict)}
    if (name, str(version)) in known:  # a tracking server links it itself; a rerun links once
        return
    versions.append({"name": name, "version": str(version)})
    call_registry(
        f"linking {name} v{version} to {model_id}",
        c.set_logged_model_tags,
        model_id,
        {MLFLOW_MODEL_VERSIONS: json.dumps(versions)},
    )


def _check_logged_model(c: MlflowClient, model_id: str, sha256: str, name: str) -> None:
    """The logged model exists, is finished, and was logged from the file the manifest validated."""
    model = call_registry(
        f"reading logged model {model_id}",
        c.get_logged_model,
        model_id,
        missing=f"no logged model {model_id}",
    )
    status = str(getattr(model.status, "name", model.status))
    if model.tags.get("sha256") != sha256 or "READY" not in status:
        raise ArtifactAltered(
            f"{name}: logged model {model_id} is {status} with sha256 {model.tags.get('sha256')!r}, "
            f"not the {sha256[:12]}... the manifest validated; re-export"
        )


def _ensure_model(c: MlflowClient, name: str, manifest: ExportManifest, precision: str) -> None:
    try:
        c.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryUnavailable(f"registry error while reading {name}: {first_line(exc)}") from exc
    call_registry(
        f"creating {name}",
        c.create_registered_model,
        name,
        tags={
            "classes": json.dumps(manifest.classes),
            "mean": json.dumps(manifest.mean),
            "std": json.dumps(manifest.std),
            "input": manifest.io.input,
            "output": manifest.io.output,
            "precision": precision,
        },
        description=f"WideResNet CIFAR-10 classifier, {precision}; versions come from the export stage",
    )


def registered_model(c: MlflowClient, name: str):
    return call_registry(
        f"reading {name}", c.get_registered_model, name, missing=f"no registered model named {name!r}"
    )


def model_version(c: MlflowClient, name: str, version: int):
    return call_registry(
        f"reading {name} v{version}",
        c.get_model_version,
        name,
        str(version),
        missing=f"{name} has no version {version}",
    )
