"""Real store servers for the stores tests: a private PostgreSQL cluster and ``rclone serve s3``.

Each is started once per session by :mod:`scripts.local_stores` and stopped after, so nothing is left
running; a test gets its own database or bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import local_stores
from tests.prerequisites import need


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_stores.S3]:
    need("s3")
    with local_stores.s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_stores.Postgres]:
    need("postgres")
    with local_stores.postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: local_stores.S3, monkeypatch: pytest.MonkeyPatch) -> local_stores.S3:
    """The server's credentials in this test's environment (boto3, MLflow and Triton read them there)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def bucket(s3_env: local_stores.S3) -> str:
    return s3_env.bucket(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def database(postgres_server: local_stores.Postgres) -> str:
    return postgres_server.create_database(f"t{uuid.uuid4().hex[:12]}")


def objects(server: local_stores.S3, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket``, read from the server's folder (what S3 clients would get)."""
    root = server.root / bucket
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
