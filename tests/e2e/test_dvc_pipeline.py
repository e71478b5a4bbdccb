"""``dvc repro`` for real, in a temporary copy of the repository, on a tiny profile and synthetic data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_image_folder, tar_folder
from tests.prerequisites import need

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict]:
    need("dvc")
    tmp = tmp_path_factory.mktemp("dvc")
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    repo = tmp / "repo"
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "tiny"
    params["data"]["val_per_class"] = 2
    params["profiles"]["tiny"] = {
        "model": {"depth": 10, "width": 1},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "eval_batch_size": 100},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    archive = tar_folder(make_image_folder(tmp / "src", {"train": 20, "test": 5}), tmp / "src.tar.gz")
    env = os.environ | {
        "CIFAR10_SOURCE": str(archive),
        "PYTHONPATH": str(repo),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    _sh(["git", "init", "-q"], repo, env)
    _sh(["git", "add", "-A"], repo, env)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"], repo, env)
    _sh(["dvc", "repro"], repo, env)
    return repo, env


def test_repro_produces_metrics_plots_and_an_mlflow_run(clone):
    repo, env = clone
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert metrics["tested_samples"] == 50 and 0.0 <= metrics["accuracy"] <= 1.0
    assert (repo / "reports" / "confusion_matrix.png").stat().st_size > 10_000
    shown = json.loads(_sh(["dvc", "metrics", "show", "--json"], repo, env).stdout)
    assert "reports/metrics.json" in json.dumps(shown)
    lines = (repo / "reports" / "train_log.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss") and len(lines) == 3
    run_id = json.loads((repo / "artifacts" / "train" / "run.json").read_text())["run_id"]
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_run(run_id)
    assert "test_accuracy" in run.data.metrics and "val_acc" in run.data.metrics
    assert run.data.tags["git_commit"] != "unknown"
    # lineage: train, evaluate and export log the prepared splits, with meta.json's digests
    from common import lineage

    inputs = {(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs}
    prepared = repo / "data" / "prepared"
    splits = {(lineage.NAMES[s], lineage.split_digest(prepared, s)) for s in ("train", "val", "test")}
    assert splits <= inputs  # (and the rows each form's figures were measured on, logged with them)
    assert {name for name, _ in inputs - splits} == {"cifar10-validation-parity", "cifar10-test-scored"}


def test_export_passed_its_gate_and_was_registered(clone):
    repo, _ = clone
    manifest = json.loads((repo / "artifacts" / "export" / "manifest.json").read_text())
    fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32")
    assert fp32["passed"] and (repo / "artifacts" / "export" / fp32["file"]).exists()
    registered = json.loads((repo / "reports" / "registered.json").read_text())["versions"]
    assert {"name": "cifar10-wrn-fp32", "version": 1, "status": "created"} in registered
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    version = c.get_model_version("cifar10-wrn-fp32", "1")
    assert version.source == f"models:/{fp32['model_id']}"  # an MLflow Model, logged by the export
    logged = c.get_logged_model(fp32["model_id"])
    assert logged.tags["git_commit"] == version.tags["git_commit"] != "unknown"
    assert len(logged.tags["dvc_lock_sha256"]) == 64  # exported under dvc repro, with its lock
    measured = {(m.key, m.dataset_name) for m in logged.metrics}
    assert ("test_accuracy", "cifar10-test-scored") in measured
    assert ("parity_top1_agreement", "cifar10-validation-parity") in measured


def test_second_repro_is_a_no_op(clone):
    repo, env = clone
    out = _sh(["dvc", "repro"], repo, env).stdout
    assert "Data and pipelines are up to date" in out or "didn't change, skipping" in out
    assert "Running stage" not in out


def test_the_outputs_round_trip_through_the_s3_remote_into_a_fresh_clone(clone, s3_server, tmp_path):
    """``cifar10 stores dvc-remote`` from params.yaml's settings, ``dvc push`` to a real S3 server, and a
    fresh ``git clone`` that configures the same remote and ``dvc pull``s every output byte for byte."""
    import uuid

    repo, env = clone
    bucket = s3_server.bucket(f"dvc{uuid.uuid4().hex[:8]}")
    env = env | s3_server.env() | {"CIFAR10_DVC_REMOTE": f"s3://{bucket}/cache"}
    cifar10 = [sys.executable, "-m", "commands", "stores", "dvc-remote"]
    said = json.loads(_sh(cifar10, repo, env).stdout)
    assert said["url"] == f"s3://{bucket}/cache" and said["endpointurl"] == s3_server.endpoint
    assert "dvc/config.local" in said["config"] and not (repo / ".dvc" / "config").read_text().count(bucket)
    _sh(["git", "add", "dvc.lock"], repo, env)  # what repro produced is what a team commits
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock"], repo, env)
    _sh(["dvc", "push"], repo, env)

    fresh = tmp_path / "fresh"
    _sh(["git", "clone", "-q", str(repo), str(fresh)], tmp_path, env)
    _sh(cifar10, fresh, env)
    _sh(["dvc", "pull"], fresh, env)
    outs = [  # what DVC caches (``cache: false`` outputs are the stage's own, recomputed, never pushed)
        out if isinstance(out, str) else next(iter(out))
        for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values()
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
        if isinstance(out, str) or next(iter(out.values())).get("cache", True)
    ]
    assert {"data/prepared", "artifacts/train", "artifacts/export"} <= set(outs)
    for out in outs:
        here, there = repo / out, fresh / out
        if here.is_dir():
            files = sorted(p.relative_to(here) for p in here.rglob("*") if p.is_file())
            assert files == sorted(p.relative_to(there) for p in there.rglob("*") if p.is_file()), out
            assert all((here / f).read_bytes() == (there / f).read_bytes() for f in files), out
        else:
            assert here.read_bytes() == there.read_bytes(), out
    status = _sh(["dvc", "status", "--cloud"], fresh, env).stdout
    assert "in sync" in status, status
    for secret in (s3_server.secret,):
        assert secret not in (fresh / ".dvc" / "config.local").read_text()
