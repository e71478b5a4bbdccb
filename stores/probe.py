"""``cifar10 stores check``: does each store answer, with the credentials in the environment?

Each probe is the cheapest real call its tool would make (``SELECT 1``, a bucket HEAD, MLflow's
``/health``), so a wrong password, a stopped server or a missing bucket shows here, in one line per
store and with every URI redacted, before a pipeline stage or a rollout trips on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from common import stores
from common.stores import S3Url, Store, redact

KEYS = ("tracking", "artifacts", "model_repository", "optuna", "dvc_remote")


class Probe(BaseModel):
    """One store: its URI (redacted), where that came from, and whether it answered."""

    store: str
    uri: str
    source: str
    ok: bool
    detail: str


def resolved(cfg: Any, root: str | Path | None = None) -> list[Store]:
    """Every store's URI in force (``s3_endpoint`` included) and its source, in params.yaml's order."""
    return [stores.resolve(cfg, key, root=root) for key in stores.ENV]


def _database(uri: str) -> str:
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5} if "postgres" in uri else {})
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    finally:
        engine.dispose()
    return "answers SELECT 1"


def _http(uri: str) -> str:
    import urllib.request

    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
        return f"/health answers {resp.status}"


def _bucket(endpoint: str, bucket: str) -> str:
    from common.object_store import Bucket

    Bucket(endpoint or None, bucket, timeout_s=5.0, attempts=1).check()
    return f"bucket {bucket} answers"


def _s3_path(uri: str) -> str:
    return uri.removeprefix("s3://").split("/", 1)[0]


def _probe(store: Store, endpoint: str) -> str:
    uri = store.uri
    if not uri:
        return "not set"
    if uri.startswith("sqlite:///"):  # connecting would create the file
        path = Path(uri.removeprefix("sqlite:///"))
        return _database(uri) if path.is_file() else "no database yet (created on first use)"
    if uri.startswith("postgresql"):
        return _database(uri)
    if uri.startswith(("http://", "https://")):
        return _http(uri)
    if store.key == "model_repository" and stores.is_s3(uri):
        url = S3Url.parse(uri)
        return _bucket(url.endpoint, url.bucket)
    if stores.is_s3(uri):
        return _bucket(endpoint, _s3_path(uri))
    if store.key == "model_repository" and not Path(uri).is_dir():
        return "no folder yet (sync writes it)"
    return "a local folder"


def check(cfg: Any, root: str | Path | None = None) -> list[Probe]:
    """Probe every store; a failure is recorded with its one-line reason, never raised."""
    found = {s.key: s for s in resolved(cfg, root)}
    endpoint = found["s3_endpoint"].uri
    probes = []
    for key in KEYS:
        store = found[key]
        try:
            ok, detail = True, _probe(store, endpoint)
        except Exception as exc:  # each store's own failure, shown in its row
            ok, detail = False, redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        probes.append(Probe(store=key, uri=store.shown, source=store.source, ok=ok, detail=detail))
    return probes
