"""compose.yaml's control plane, run for real without Docker: the same commands, flags and config files.

No Docker engine runs here, but MLflow and Prometheus do. Each is started with the command line
compose.yaml gives it (only addresses and paths rewritten for this machine), and checked for what
the stack promises: MLflow refuses anonymous and wrong credentials and serves the registry to the
right ones; Prometheus has no lifecycle or admin API.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.client.conftest import free_port
from tests.prerequisites import need

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
PASSWORD = "compose-test-password"  # MLflow refuses an admin password under 12 characters


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def status(url: str, method: str = "GET", auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url, method=method)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            status(url)
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise AssertionError(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


def compose_database(compose, postgres_server) -> tuple[str, str]:
    """compose's MLflow database on the real PostgreSQL here: its user (with a password) and database."""
    import psycopg

    env = compose["services"]["postgres"]["environment"]
    user, database, password = env["POSTGRES_USER"], env["POSTGRES_DB"], "pg-" + os.urandom(8).hex()
    with psycopg.connect(postgres_server.uri(), password=postgres_server.password, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {database} OWNER {user}")
    return f"127.0.0.1:{postgres_server.port}", password


@pytest.fixture(scope="module")
def mlflow_server(
    compose, postgres_server, s3_server, tmp_path_factory
) -> Iterator[tuple[str, dict[str, str]]]:
    """``mlflow server`` with compose's arguments, auth config and environment (secrets filled in),
    on a real PostgreSQL and a real S3 server where compose has its ``postgres`` and ``minio``."""
    svc = compose["services"]["mlflow"]
    tmp, port = tmp_path_factory.mktemp("mlflow-auth"), free_port()
    database, db_password = compose_database(compose, postgres_server)
    ini_host = next(v for v in svc["volumes"] if v.endswith("basic_auth.ini:ro")).split(":")[0]
    auth_db = next(v for v in svc["volumes"] if v.startswith("mlflow-auth:")).split(":")[1]
    ini = tmp / "basic_auth.ini"
    ini.write_text((ROOT / ini_host).read_text().replace(auth_db, str(tmp)))
    args = []
    for arg in svc["command"][1:]:
        arg = arg.replace("${PWD}", str(tmp)).replace("@postgres:5432", f"@{database}")
        if arg.startswith("--artifacts-destination="):
            s3_server.bucket(arg.removeprefix("--artifacts-destination=s3://").split("/")[0])
        if arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        args.append(arg)
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": "admin"}
    env |= {"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key"}
    env |= s3_server.env() | {"PGPASSWORD": db_password}  # compose: POSTGRES_PASSWORD, S3_ACCESS_KEY, ...
    assert svc["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"  # here: the real S3 server
    env.pop("MLFLOW_TRACKING_URI", None)
    log = tmp / "mlflow.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), *args], cwd=tmp, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{url}/health", proc, log)
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_mlflow_refuses_anonymous_and_wrong_credentials(mlflow_server):
    url, _ = mlflow_server
    search = f"{url}/api/2.0/mlflow/registered-models/search"
    assert status(search) == 401
    assert status(search, auth=("admin", "not-the-password")) == 401
    assert status(search, auth=("admin", PASSWORD)) == 200


def test_the_registry_cli_works_with_credentials_and_stops_cleanly_without(mlflow_server, tmp_path):
    url, _ = mlflow_server
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": url, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}

    def cli(extra: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "commands", "registry", "--params", str(ROOT / "params.yaml"), "list",
             "--json"],
            cwd=tmp_path, env=env | extra, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    anonymous = cli({})
    assert anonymous.returncode == 3, anonymous.stderr
    assert "401" in anonymous.stderr or "credentials" in anonymous.stderr.lower(), anonymous.stderr
    allowed = cli({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD})
    assert allowed.returncode == 0 and allowed.stdout.strip() == "[]", allowed.stderr


def test_prometheus_runs_without_lifecycle_or_admin_api(compose, tmp_path):
    need("prometheus")
    svc = compose["services"]["prometheus"]
    config = (ROOT / "monitoring" / "prometheus.compose.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/rules", str(ROOT / "monitoring/rules"))
    )
    port = free_port()
    args = [a for a in svc["command"] if not a.startswith("--config.file=")]
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", *args,
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        wait_up(f"http://127.0.0.1:{port}/-/ready", proc, log)
        assert status(f"http://127.0.0.1:{port}/-/reload", "POST") == 403
        assert status(f"http://127.0.0.1:{port}/-/quit", "POST") == 403
        assert status(f"http://127.0.0.1:{port}/api/v1/admin/tsdb/snapshot", "POST") >= 400
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_compose_mlflow_keeps_runs_in_postgres_and_artifacts_in_the_bucket(
    mlflow_server, s3_server, postgres_server, monkeypatch
):
    """What a client logs through compose's MLflow (its URL and login only) lands in the stack's stores."""
    import psycopg
    from mlflow.tracking import MlflowClient

    url, env = mlflow_server
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)  # the client has none of the stack's secrets
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    client = MlflowClient(url)
    experiment = client.create_experiment(f"compose-{os.urandom(4).hex()}")
    run = client.create_run(experiment)
    client.log_text(run.info.run_id, "written through the proxy", "note.txt")
    assert client.download_artifacts(run.info.run_id, "note.txt") is not None
    stored = list((s3_server.root / "mlflow").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "written through the proxy"
    with psycopg.connect(
        postgres_server.uri("mlflow").replace("cifar10@", "mlflow@"), password=env["PGPASSWORD"]
    ) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM runs WHERE run_uuid = %s", (run.info.run_id,)
        ).fetchone()
    assert count == 1
