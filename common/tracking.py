"""MLflow set-up shared by every command that records or reads runs and models.

The store is ``stores.tracking`` (:mod:`common.stores`): by default a sqlite file plus a local
artifact folder (``stores.artifacts``) in the working directory (the repository root when run
through DVC), so a fresh clone needs no server. ``MLFLOW_TRACKING_URI`` (or ``--tracking-uri``)
wins over it, as MLflow's own tools have it; a team points it at PostgreSQL or a tracking server.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from common import stores

log = logging.getLogger(__name__)

_settings: Any = None  # the ``stores`` section of the command's params.yaml (:func:`use`)


def use(cfg: Any) -> None:
    """Take the stores from ``cfg`` for every later :func:`configure`: a ``params.stores`` section,
    or a ``params.yaml`` path (read when a store is first needed, so a command that never touches
    MLflow does not read it)."""
    global _settings
    _settings = cfg


def _stores() -> Any:
    global _settings
    from common.params_schema import StoresConfig

    if isinstance(_settings, Path):
        from common.params import resolve

        _settings = resolve(_settings if _settings.is_file() else None).params.stores
    return _settings if _settings is not None else StoresConfig()


def tracking_uri(root: str | Path | None = None) -> str:
    """The tracking URI in force: ``$MLFLOW_TRACKING_URI``, else ``stores.tracking`` (under ``root``)."""
    return stores.resolve(_stores(), "tracking", root=root).uri


def artifact_location(uri: str, root: str | Path | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: ``stores.artifacts``; a tracking server decides itself."""
    if uri.startswith(("http://", "https://")):
        return None
    location = stores.resolve(_stores(), "artifacts", root=root).uri
    return location if stores.is_s3(location) or "://" in location else Path(location).as_uri()


_registry_set_by_us: str | None = None
_checked: set[str] = set()
PERMANENT = ("password authentication failed", "does not exist", "no password supplied", "role ")


def check_database(uri: str) -> None:
    """Fail at once, in one line, where retrying cannot help: a refused password, a missing database.

    MLflow retries creating its engine for about 100 s whatever the cause (right for a database
    still starting, as in compose); a wrong ``PGPASSWORD`` would just wait that long first.
    """
    import sqlalchemy

    from common.exit_codes import Unavailable

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 10})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        said = " ".join(str(exc.orig or exc).split())
        if any(p in said for p in PERMANENT):
            raise Unavailable(
                f"the tracking database {stores.redact(uri)} refused us: {stores.redact(said)}"
            ) from None
    finally:
        engine.dispose()


def configure(root: str | Path | None = None) -> str:
    """Point the ``mlflow`` module at the store and return its URI.

    The registry follows the tracking store unless the user chose one in ``MLFLOW_REGISTRY_URI``.
    ``mlflow.set_registry_uri`` writes that variable itself, so a value we set is remembered and
    not mistaken for the user's on the next call (when the tracking URI may have changed).
    """
    global _registry_set_by_us
    import mlflow

    uri = tracking_uri(root)
    if uri.startswith("postgresql") and uri not in _checked:
        check_database(uri)
        _checked.add(uri)
    endpoint = stores.resolve(_stores(), "s3_endpoint").uri
    if endpoint:  # MLflow's S3 artifact client reads it from the environment
        os.environ[stores.ENV["s3_endpoint"]] = endpoint
    mlflow.set_tracking_uri(uri)
    user_registry = os.environ.get("MLFLOW_REGISTRY_URI")
    if not user_registry or user_registry == _registry_set_by_us:
        mlflow.set_registry_uri(uri)
        _registry_set_by_us = uri
    return uri


def ensure_experiment(name: str, root: str | Path | None = None) -> str:
    """Return the experiment id for ``name``, creating it, or restoring it if it was deleted.

    A deleted experiment keeps its name reserved in MLflow, so ``set_experiment`` would fail; users
    who deleted it from the UI expect the pipeline to carry on, which restoring does.
    """
    from mlflow.entities import LifecycleStage
    from mlflow.tracking import MlflowClient

    uri = configure(root)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri, root))
        except MlflowException:  # another worker created it a moment ago (tune workers start together)
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == LifecycleStage.DELETED:
        log.warning("MLflow experiment %r was deleted; restoring it", name)
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def git_commit(root: str | Path | None = None) -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown`` outside git.

    ``CIFAR10_GIT_COMMIT`` wins: a copy of the tree without ``.git`` (the lent GPU machine) is told
    which commit it is by whoever sent it.
    """
    if os.environ.get("CIFAR10_GIT_COMMIT"):
        return os.environ["CIFAR10_GIT_COMMIT"]
    cwd = str(root or Path.cwd())
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha
