"""A team's MLflow: ``cifar10 stores mlflow-server`` on a real PostgreSQL, artifacts proxied to a real S3.

The pipeline's own commands run unchanged against it, as separate processes whose environment holds
only the server's URL: no database password, no S3 key. What they log lands in PostgreSQL (runs,
registry) and in the bucket (artifacts); no secret appears in any output, log, tag or parameter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import TeamMlflow
from tests.stores.conftest import objects

pytestmark = pytest.mark.slow


def cifar10(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, "-m", "commands", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (args, run.stderr[-3000:])
    return run


def small_params(path: Path, prefix: str, precisions: tuple[str, ...] = ("fp32",)) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "registry": {"model_prefix": prefix, "serve": ["fp32"], "ensemble_target": "fp32"},
                "data": {"val_per_class": 4},
                "export": {
                    "precisions": list(precisions),
                    "parity_images": 40,
                    "calibration_images": 64,
                    "max_batch": 64,
                },
            }
        )
    )
    return path


def test_the_pipeline_commands_run_unchanged_against_the_team_server(
    team_mlflow: TeamMlflow, small_weights, small_prepared, tmp_path
):
    import psycopg
    from mlflow.tracking import MlflowClient

    env, prefix = team_mlflow.client_env(), f"team{uuid.uuid4().hex[:6]}"
    params = small_params(tmp_path / "params.yaml", prefix)
    runs = [
        cifar10("export", "--params", str(params), "--checkpoint", str(small_weights), "--data",
                str(small_prepared), "--out", "export", "--report", "export.json", env=env, cwd=tmp_path),
        cifar10("registry", "--params", str(params), "register", "--manifest", "export/manifest.json",
                "--promote", "production", env=env, cwd=tmp_path),
        cifar10("registry", "--params", str(params), "list", env=env, cwd=tmp_path),
        cifar10("registry", "--params", str(params), "sync", "--repository", "repo", "--cache", "cache",
                env=env, cwd=tmp_path),
    ]  # fmt: skip
    name = f"{prefix}-fp32"
    assert (tmp_path / "repo" / "wrn_fp32" / "1" / "model.onnx").is_file()  # downloaded through the proxy

    # where it all landed: the registry and runs in PostgreSQL, the files in the bucket
    with psycopg.connect(team_mlflow.database, password=team_mlflow.pg.password) as conn:
        registered = {r[0] for r in conn.execute("SELECT name FROM registered_models")}
        versions = conn.execute("SELECT count(*) FROM model_versions WHERE name = %s", (name,)).fetchone()[0]
    assert name in registered and versions == 1
    stored = objects(team_mlflow.s3, team_mlflow.bucket)
    assert any(k.startswith("mlflow/") and k.endswith("model.fp32.onnx") for k in stored), sorted(stored)[:5]

    # no secret in what the commands printed, in the server's log, or in what MLflow recorded
    client = MlflowClient(team_mlflow.uri)
    recorded = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            recorded += [*run.data.params.values(), *run.data.tags.values()]
    recorded += [json.dumps(dict(v.tags)) for v in client.search_model_versions(f"name = '{name}'")]
    said = "".join(r.stdout + r.stderr for r in runs) + team_mlflow.log.read_text(errors="replace")
    for secret in team_mlflow.secrets():
        assert secret not in said and not any(secret in value for value in recorded)


def test_a_password_in_a_uri_is_redacted_everywhere_it_is_shown(team_mlflow: TeamMlflow, tmp_path):
    """A user may put the password in MLFLOW_TRACKING_URI or OPTUNA_STORAGE; it is never printed."""
    password = team_mlflow.pg.password
    with_password = team_mlflow.database.replace("cifar10@", f"cifar10:{password}@")
    env = team_mlflow.client_env() | {"MLFLOW_TRACKING_URI": with_password, "OPTUNA_STORAGE": with_password}
    (tmp_path / "params.yaml").write_text("{}\n")  # every store from the environment
    shown = cifar10("stores", "show", env=env, cwd=tmp_path)
    checked = cifar10("stores", "check", env=env, cwd=tmp_path)
    dry = cifar10(
        "stores", "mlflow-server", "--dry-run", "--backend-store-uri", with_password, env=env, cwd=tmp_path
    )
    for run in (shown, checked, dry):
        assert password not in run.stdout + run.stderr
    assert "cifar10:***@" in shown.stdout and "answers SELECT 1" in checked.stdout
    assert checked.stdout.count("answers SELECT 1") == 2  # tracking and optuna, both on PostgreSQL


def test_a_password_in_params_yaml_is_refused_with_the_variable_to_use(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"stores": {"optuna": "postgresql://u:hunter2@db:5432/optuna"}}))
    run = subprocess.run(
        [sys.executable, "-m", "commands", "stores", "show", "--params", str(params)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "PGPASSWORD" in run.stderr and "hunter2" not in run.stderr + run.stdout


def test_wrong_database_password_is_one_line_without_it(team_mlflow: TeamMlflow, tmp_path):
    env = team_mlflow.client_env() | {"MLFLOW_TRACKING_URI": team_mlflow.database, "PGPASSWORD": "not-it-42"}
    (tmp_path / "params.yaml").write_text("{}\n")
    run = subprocess.run(
        [sys.executable, "-m", "commands", "registry", "list"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 3 and len(lines) == 1 and "not-it-42" not in run.stderr, run.stderr[-2000:]
