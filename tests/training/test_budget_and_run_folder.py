"""A time-budgeted schedule, training without a tracking server, and importing the run afterwards.

Real training (WRN-10-1 on tiny synthetic data), a real MLflow store for the import, and an MLflow
server that is simply not there (a free port) for the run that must survive without it.
"""

from __future__ import annotations

import json
import math

import pytest

from common.params import TrainConfig
from common.run_folder import METRICS_FILE, RUN_FILE, import_run
from tests.training.conftest import run_training, tiny_params
from training.engine import lr_factor
from training.loop import Schedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_without_a_budget_the_schedule_is_the_step_schedule_exactly():
    schedule = Schedule(TrainConfig(epochs=3, warmup_epochs=1.0), per_epoch=10)
    assert [schedule.lr_factor(s) for s in range(30)] == [lr_factor(s, 10, 30) for s in range(30)]
    assert not schedule.done(29) and schedule.done(30)


def test_a_budget_lays_the_cosine_over_time_and_ends_it_when_the_time_is_spent(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr("training.loop.time.perf_counter", clock)
    schedule = Schedule(TrainConfig(epochs=1000, warmup_epochs=1.0, max_minutes=1.0), per_epoch=10)
    assert schedule.lr_factor(0) == pytest.approx(0.1)  # linear warm-up, by steps
    clock.now += 6.0
    assert schedule.lr_factor(10) == pytest.approx(1.0)  # warm-up ended at 6 s: the cosine starts
    clock.now += 27.0  # half of the remaining 54 s
    assert schedule.lr_factor(11) == pytest.approx(0.5)
    assert not schedule.done(11)
    clock.now += 27.0
    assert schedule.lr_factor(12) == pytest.approx(0.0, abs=1e-12) and schedule.done(12)
    # The step count still bounds it: a budget longer than all epochs ends with the epochs.
    assert Schedule(TrainConfig(epochs=2, max_minutes=60.0), per_epoch=10).done(20)
    # Resumed from a checkpoint's clock: the time already spent counts.
    resumed = Schedule(
        TrainConfig(epochs=1000, max_minutes=1.0), 10, {"elapsed_s": 60.0, "warmup_end_s": 6.0}
    )
    assert resumed.done(500) and math.isclose(resumed.lr_factor(500), 0.0, abs_tol=1e-12)


def test_a_budgeted_run_ends_as_a_finished_model_when_its_time_is_spent(prepared, tmp_path, isolated_mlflow):
    budget_s = 6.0
    # The epoch cap is never the limit here.
    summary = run_training(tiny_params(epochs=100_000, max_minutes=budget_s / 60), prepared, tmp_path)
    history = json.loads((tmp_path / "ckpt" / "state.json").read_text())["history"]
    assert summary["train_seconds"] >= budget_s  # it trained until the budget was spent ...
    assert len(history) < 100_000  # ... not until the epoch cap
    # ... and the cosine had reached its end: the last step ran with the budget >= 86 % spent, which
    # holds unless one step takes over 14 % of the budget (~0.8 s here, 20x this machine's steps).
    assert history[-1]["lr"] < 0.05 * 0.05
    assert (tmp_path / "model.safetensors").is_file()
    assert [h["elapsed_s"] for h in history] == sorted(h["elapsed_s"] for h in history)


def test_training_without_a_tracking_server_keeps_the_run_and_imports_it_later(
    prepared, tmp_path, monkeypatch, isolated_mlflow
):
    from mlflow.tracking import MlflowClient

    from tests.client.conftest import free_port

    store = isolated_mlflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    folder = tmp_path / "run"
    summary = run_training(tiny_params(), prepared, tmp_path, run_folder=folder)
    assert summary["run_id"] is None and summary["run_folder"] == str(folder)
    meta = json.loads((folder / RUN_FILE).read_text())
    assert meta["status"] == "FINISHED" and meta["end_time"] >= meta["start_time"]
    assert meta["params"]["train.epochs"] == "2" and meta["tags"]["stage"] == "train"
    lines = [json.loads(x) for x in (folder / METRICS_FILE).read_text().splitlines()]
    assert {r["step"] for r in lines if r["key"] == "val_acc"} == {1, 2}
    assert (folder / "artifacts" / "model" / "model.safetensors").is_file()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the tracking store is back
    run_id, created = import_run(folder)
    assert created and import_run(folder) == (run_id, False)  # once only
    run = MlflowClient(store).get_run(run_id)
    assert (run.info.start_time, run.info.end_time) == (meta["start_time"], meta["end_time"])
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
    history = MlflowClient(store).get_metric_history(run_id, "val_acc")
    assert [(m.step, m.timestamp) for m in history] == [
        (r["step"], r["timestamp"]) for r in lines if r["key"] == "val_acc"
    ]
    artifacts = {a.path for a in MlflowClient(store).list_artifacts(run_id)}
    assert {"model", "params.yaml"} <= artifacts


def test_a_metrics_line_a_kill_cut_short_is_skipped_not_fatal(tmp_path, isolated_mlflow):
    from common.run_folder import RunFolder

    folder = RunFolder(tmp_path / "run", "budget-tests", "killed")
    folder.metrics({"val_acc": 0.5}, step=1)
    with open(tmp_path / "run" / METRICS_FILE, "a") as fh:
        fh.write('{"key": "val_acc", "val')  # the process died mid-write
    folder.metrics({"val_acc": 0.7}, step=2)  # the resumed run appends on a fresh line
    folder.end()
    run_id, created = import_run(tmp_path / "run")
    from mlflow.tracking import MlflowClient

    history = MlflowClient(isolated_mlflow).get_metric_history(run_id, "val_acc")
    assert created and [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7)]
