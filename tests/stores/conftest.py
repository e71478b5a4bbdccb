"""The stores tests' helpers: a team's MLflow server, and reading a bucket as S3 clients would.

The servers themselves (PostgreSQL, ``rclone serve s3``) are session fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import local_stores


def objects(server: local_stores.S3, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket``, read from the server's folder (what S3 clients would get)."""
    root = server.root / bucket
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class TeamMlflow:
    """``cifar10 stores mlflow-server`` on a PostgreSQL database, proxying artifacts to an S3 bucket.

    ``server_env`` holds the secrets (the database password, the S3 keys); clients get only ``uri``.
    """

    def __init__(self, pg: local_stores.Postgres, s3: local_stores.S3, workdir: Path) -> None:
        import os
        import subprocess
        import sys

        self.pg, self.s3 = pg, s3
        self.database = pg.create_database(f"mlflow{uuid.uuid4().hex[:8]}")
        self.bucket = s3.bucket(f"mlflow{uuid.uuid4().hex[:8]}")
        self.port = local_stores.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server_env = (
            os.environ
            | pg.env()
            | s3.env()
            | {
                "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{self.bucket}/mlflow",
            }
        )
        self.server_env.pop("MLFLOW_TRACKING_URI", None)
        self.log = workdir / "mlflow-server.log"
        argv = [sys.executable, "-m", "commands", "stores", "mlflow-server", "--backend-store-uri",
                self.database, "--port", str(self.port), "--workers", "1"]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                argv, env=self.server_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 120) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server not ready: {self.log.read_text()[-3000:]}")

    def client_env(self) -> dict[str, str]:
        """A client's environment: the server's URL, and no database password or S3 key at all."""
        import os

        secrets = set(self.pg.env()) | set(self.s3.env())
        return {k: v for k, v in os.environ.items() if k not in secrets} | {"MLFLOW_TRACKING_URI": self.uri}

    def secrets(self) -> list[str]:
        return [self.pg.password, self.s3.secret]

    def stop(self) -> None:
        """The server and its workers (one process group), nothing left running."""
        import contextlib
        import os
        import signal
        import subprocess

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def team_mlflow(postgres_server, s3_server, tmp_path_factory) -> Iterator[TeamMlflow]:
    team = TeamMlflow(postgres_server, s3_server, tmp_path_factory.mktemp("team"))
    yield team
    team.stop()
