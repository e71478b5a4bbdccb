"""Two ``cifar10 tune run`` workers on one Optuna study in a real PostgreSQL (``stores.optuna``).

Real processes, real training of tiny trials, a real database with a password from the environment.
Both workers take trials from the one study; the study's budget is met once, not once per worker;
a worker killed in the middle of a trial has that trial failed by the heartbeat (noticed by the
other worker) and its settings run again, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.prerequisites import ROOT

pytestmark = pytest.mark.slow
TRIALS = 6


def tiny_params(path: Path, storage: str) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profiles"]["cpu"]["model"] = {"depth": 10, "width": 1, "dropout": 0.0}
    raw["profiles"]["cpu"]["train"] |= {"batch_size": 32, "warmup_epochs": 0.0}
    raw["tune"] |= {"startup_trials": 50, "heartbeat_s": 1}  # no pruning: every trial runs whole
    raw["tune"]["profiles"]["cpu"] = {
        "trials": TRIALS, "timeout_minutes": 10, "epochs": 3, "train_subset": 200, "val_images": 0,
        "space": {"train.lr": {"low": 0.01, "high": 0.1, "log": True}, "model.width": {"choices": [1]}},
    }  # fmt: skip
    raw["stores"] |= {"optuna": storage}
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_workers_share_one_study_and_a_killed_workers_trial_is_failed_and_run_again(
    postgres_server, database, small_prepared, tmp_path, monkeypatch
):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    from common.params import load_params
    from tuning.space import study_name

    params = tiny_params(tmp_path / "params.yaml", database)
    env = os.environ | postgres_server.env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)  # this process reads the study too
    name = study_name(load_params(params, "cpu"))
    MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()  # two processes must not both create it

    def worker(tag: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "commands", "tune", "--params", str(params), "--profile", "cpu", "run",
                "--data", str(small_prepared), "--out", str(tmp_path / tag)]  # fmt: skip
        return subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def trials():
        try:
            return optuna.load_study(study_name=name, storage=database).get_trials(deepcopy=False)
        except KeyError:
            return []

    a, b = worker("a"), worker("b")
    victim = None
    try:
        deadline = time.monotonic() + 300
        while victim is None and time.monotonic() < deadline:  # b finished one trial and runs the next
            time.sleep(0.3)
            mine = [t for t in trials() if t.user_attrs.get("worker", "").endswith(f":{b.pid}")]
            if any(t.state == TrialState.COMPLETE for t in mine):
                victim = next((t for t in mine if t.state == TrialState.RUNNING), None)
            for p in (a, b):
                assert p.poll() is None, p.communicate()[1].decode()[-3000:]
        assert victim is not None, "worker b never ran a second trial"
        b.send_signal(signal.SIGKILL)
        b.wait()
        _, err = a.communicate(timeout=600)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert a.returncode == 0, err.decode()[-3000:]

    done = [t for t in trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in done}
    assert workers == {str(a.pid), str(b.pid)}  # both contributed
    assert TRIALS <= len(done) <= TRIALS + 1  # the study's budget, met once (a worker in flight may add one)
    numbers = [t.number for t in trials()]
    assert len(numbers) == len(set(numbers))  # no trial ran twice
    failed = [t for t in trials() if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [victim.number]  # the killed worker's trial, failed by the heartbeat
    retried = [t for t in done if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params  # ... and its settings ran again, once
