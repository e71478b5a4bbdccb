"""Training mechanics on tiny synthetic data: optimisation, schedule, resume and MLflow bookkeeping."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from common.params import TrainConfig
from tests.training.conftest import run_training, tiny_params
from training.engine import build_optimizer, lr_factor
from training.model import WideResNet

ROOT = Path(__file__).resolve().parents[2]


def test_one_step_lowers_the_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    model = WideResNet(10, 1)
    opt = build_optimizer(model, TrainConfig(lr=0.05))
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    model.train()
    before = F.cross_entropy(model(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    assert F.cross_entropy(model(x), y).item() < before.item()


def test_weight_decay_skips_batchnorm_and_bias():
    groups = build_optimizer(WideResNet(10, 1), TrainConfig(weight_decay=5e-4)).param_groups
    assert groups[0]["weight_decay"] == 5e-4 and all(p.ndim > 1 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0 and all(p.ndim == 1 for p in groups[1]["params"])
    assert groups[0]["nesterov"] is True


def test_warmup_then_cosine_schedule():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9], ids=["weights", "ema"])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(
    prepared, tmp_path, isolated_mlflow, ema_decay
):
    params = tiny_params(epochs=3, trivial_augment=True, cutout=8, ema_decay=ema_decay)
    run_training(params, prepared, tmp_path / "full")
    part = run_training(params, prepared, tmp_path / "resumed", stop_after_epochs=1)
    assert part["interrupted_after_epoch"] == 1
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = run_training(params, prepared, tmp_path / "resumed")
    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "resumed" / "model.safetensors"),
    )
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["run_id"] == part["run_id"], "a resumed run keeps logging into its MLflow run"
    assert len(json.loads((tmp_path / "resumed" / "ckpt" / "state.json").read_text())["history"]) == 3


def test_changed_config_does_not_resume_a_stale_checkpoint(prepared, tmp_path, isolated_mlflow):
    run_training(tiny_params(epochs=1), prepared, tmp_path / "o")
    summary = run_training(tiny_params(epochs=1, lr=0.01), prepared, tmp_path / "o")
    state = json.loads((tmp_path / "o" / "ckpt" / "state.json").read_text())
    assert len(state["history"]) == 1 and summary["run_id"] == state["run_id"]


def test_run_is_tracked_and_a_deleted_experiment_is_restored(prepared, tmp_path, isolated_mlflow):
    from mlflow.tracking import MlflowClient

    first = run_training(tiny_params(epochs=1), prepared, tmp_path / "a")
    client = MlflowClient(isolated_mlflow)
    exp = client.get_experiment_by_name("unit-tests")
    client.delete_experiment(exp.experiment_id)
    second = run_training(tiny_params(epochs=1, seed=1), prepared, tmp_path / "b")
    assert client.get_experiment_by_name("unit-tests").lifecycle_stage == "active"
    run = client.get_run(second["run_id"])
    assert run.data.params["model.depth"] == "10" and run.data.tags["data_hash"] == first["data_hash"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1]
    assert "model/model.safetensors" in [a.path for a in client.list_artifacts(run.info.run_id, "model")]


def _train_cli(tmp_path: Path, prepared: Path, out: Path, train: str) -> list[str]:
    """``cifar10 train`` arguments for a tiny WRN-10-1 profile (``train``: the YAML mapping)."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        "profile: t\ndata: {val_per_class: 2}\nprofiles:\n  t:\n    model: {depth: 10, width: 1}\n"
        f"    train: {train}\n"
    )
    paths = {
        "--params": params_file, "--data": prepared, "--model-out": out / "model.safetensors",
        "--checkpoint-dir": out / "ckpt", "--log-csv": out / "log.csv", "--run-file": out / "run.json",
    }  # fmt: skip
    return [
        "-m",
        "commands",
        "train",
        *[x for kv in paths.items() for x in map(str, kv)],
        "--no-progress",
    ]


def test_killed_training_process_resumes_and_finishes(prepared, tmp_path, isolated_mlflow):
    """A real SIGKILL in the middle of epoch 2; the rerun continues from epoch 1's checkpoint."""
    out = tmp_path / "k"
    cmd = [sys.executable, *_train_cli(tmp_path, prepared, out, "{epochs: 3, batch_size: 4, lr: 0.05}")]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "ckpt" / "state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch_at_kill = json.loads((out / "ckpt" / "state.json").read_text())["epoch"]
    assert epoch_at_kill < 3 and not (out / "model.safetensors").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr + done.stdout
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert state["epoch"] == 3 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    assert (out / "model.safetensors").exists()


@pytest.mark.slow
def test_torchrun_ddp_two_processes_on_cpu(prepared, tmp_path, isolated_mlflow):
    """The multi-GPU path for real: torchrun, two ranks, gloo on the CPU."""
    out = tmp_path / "ddp"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    train = "{epochs: 2, batch_size: 16, lr: 0.05}"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", *_train_cli(tmp_path, prepared, out, train)]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    # 100 training images, global batch 16 over 2 ranks: 7 steps per epoch.
    assert state["step"] == 14
    assert (out / "model.safetensors").exists() and json.loads((out / "run.json").read_text())["run_id"]
