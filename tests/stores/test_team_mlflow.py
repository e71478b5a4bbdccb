"""Store URIs with secrets in them, against a real PostgreSQL: shown redacted, refused in params.yaml,
a wrong password one line at once. The pipeline's commands against a team's MLflow server run in
``tests/release/test_release_live.py``, whose whole release stack uses one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def without_stores() -> dict[str, str]:
    """This process's environment without any store setting or secret a test may have left there."""
    drop = ("MLFLOW_", "AWS_", "PG", "OPTUNA_", "CIFAR10_STORES", "CIFAR10_MODEL_REPOSITORY")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


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


def test_a_password_in_a_uri_is_redacted_everywhere_it_is_shown(postgres_server, database, tmp_path):
    """A user may put the password in MLFLOW_TRACKING_URI or OPTUNA_STORAGE; it is never printed."""
    password = postgres_server.password
    with_password = database.replace("cifar10@", f"cifar10:{password}@")
    env = without_stores() | {"MLFLOW_TRACKING_URI": with_password, "OPTUNA_STORAGE": with_password}
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


def test_wrong_database_password_is_one_line_without_it(database, tmp_path):
    env = without_stores() | {"MLFLOW_TRACKING_URI": database, "PGPASSWORD": "not-it-42"}
    (tmp_path / "params.yaml").write_text("{}\n")
    run = subprocess.run(
        [sys.executable, "-m", "commands", "registry", "list"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 3 and len(lines) == 1 and "not-it-42" not in run.stderr, run.stderr[-2000:]
