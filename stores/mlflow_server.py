"""``cifar10 stores mlflow-server``: MLflow's own tracking server in front of a team's stores.

The server keeps runs and the registry in a database (PostgreSQL for a team) and proxies artifacts
to ``stores.artifacts`` (``--serve-artifacts``), so clients need only its URL
(``MLFLOW_TRACKING_URI=http://host:5000``), never the database password or S3 keys. Those stay in
the server's environment (``PGPASSWORD``, ``AWS_*``), where MLflow, SQLAlchemy and boto3 read them.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from common import stores
from common.exit_codes import UsageError

BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"  # mlflow server's own variable for --backend-store-uri


def backend(cfg: Any, option: str | None = None, root: str | Path | None = None) -> str:
    """The database the server keeps: ``option``, ``$MLFLOW_BACKEND_STORE_URI``, else ``stores.tracking``
    when that names a database (the server then serves the store the pipeline would write directly)."""
    uri = option or os.environ.get(BACKEND_ENV) or stores.resolve(cfg, "tracking", root=root).uri
    if not uri.startswith(("sqlite:", "postgresql")):
        raise UsageError(
            f"the tracking server needs a database, not {stores.redact(uri)!r}: pass --backend-store-uri "
            f"postgresql://user@host:port/db (or set {BACKEND_ENV})"
        )
    return stores.absolute(uri, root)


def server_command(
    cfg: Any,
    host: str,
    port: int,
    workers: int,
    backend_uri: str | None = None,
    root: str | Path | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``mlflow server`` argv and the environment it runs with (the S3 endpoint for its artifact proxy)."""
    artifacts = stores.resolve(cfg, "artifacts", root=root).uri
    endpoint = stores.resolve(cfg, "s3_endpoint").uri
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    argv = [
        mlflow, "server", "--backend-store-uri", backend(cfg, backend_uri, root),
        "--artifacts-destination", artifacts, "--serve-artifacts",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    env = dict(os.environ)
    if endpoint:
        env[stores.ENV["s3_endpoint"]] = endpoint
    env.pop("MLFLOW_TRACKING_URI", None)  # the server is the store; a client URI here would confuse it
    return argv, env


def shown(argv: list[str]) -> str:
    """The command line with any password in it redacted, for the log."""
    return stores.redact(" ".join(argv))
