"""The tune stage on small synthetic data: nested MLflow runs, pruning, resume after a kill, best params.

Real Optuna (sqlite storage), real MLflow (sqlite store), real training of a WRN-10-1 on the
class-tinted images of ``small_prepared`` (120 of its training images, its 40 validation images),
so a trial takes seconds and a good setting clearly beats a useless one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from common.params import ModelConfig, SearchParam, TuneBudget, TuneConfig, load_params
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SPACE = {
    "train.lr": SearchParam(low=1e-5, high=0.2, log=True),
    "train.label_smoothing": SearchParam(low=0.0, high=0.1),
    "model.width": SearchParam(choices=(1,)),
}


def tiny(tmp_path: Path, trials: int = 3, epochs: int = 2, startup: int = 2):
    params = load_params(ROOT / "params.yaml", "cpu")
    budget = TuneBudget(
        trials=trials, timeout_minutes=10, epochs=epochs, train_subset=0, val_images=0, space=SPACE
    )
    tune = TuneConfig(startup_trials=startup, warmup_epochs=0, budget=budget)
    train = params.train.replace(batch_size=32, warmup_epochs=0.0, eval_batch_size=100)
    stores = params.stores.replace(optuna=f"sqlite:///{tmp_path / 'optuna.db'}")
    return params.replace(model=ModelConfig(depth=10, width=1), train=train, tune=tune, stores=stores)


def runs(uri: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    experiment = c.get_experiment_by_name("cifar10-tune")
    return c, c.search_runs([experiment.experiment_id])


def test_a_tiny_study_completes_with_nested_runs_and_a_best_params_file(
    small_prepared, isolated_mlflow, tmp_path
):
    from tuning.study import run_study

    params = tiny(tmp_path)
    summary = run_study(params, small_prepared, tmp_path / "out")
    assert sum(summary["trials"].get(k, 0) for k in ("complete", "pruned")) == 3
    # the first trial is the profile's own settings: the baseline the best is compared with
    assert summary["baseline"]["trial"] == 0 and summary["baseline"]["params"]["train.lr"] == params.train.lr
    assert summary["best"]["val_acc"] >= summary["baseline"]["val_acc"]
    c, found = runs(isolated_mlflow)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    for child in children:
        assert {"train.lr", "train.label_smoothing", "model.width"} <= set(child.data.params)
        assert child.data.tags["optuna.state"] in ("COMPLETE", "PRUNED")
        history = c.get_metric_history(child.info.run_id, "val_acc")
        assert 1 <= len(history) <= 2 and [m.step for m in history] == list(range(1, len(history) + 1))
    parent = parents[0]
    assert parent.data.metrics["best_val_acc"] == summary["best"]["val_acc"]
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "best_params.json", "summary.json"} <= artifacts
    best = json.loads((tmp_path / "out/best_params.json").read_text())
    assert best["overrides"] == [f"profiles.cpu.{k}={v}" for k, v in sorted(best["params"].items())]


def test_a_trial_whose_curve_is_clearly_worse_is_pruned(small_prepared, isolated_mlflow, tmp_path):
    from optuna.trial import TrialState

    from tuning.study import _study, run_study

    params = tiny(tmp_path, trials=3, epochs=3, startup=2)
    study = _study(params, f"sqlite:///{tmp_path / 'optuna.db'}")
    for lr in (0.05, 0.05, 1e-5):  # two that learn, then one that cannot move in 3 epochs
        study.enqueue_trial({"train.lr": lr, "train.label_smoothing": 0.0, "model.width": 1})
    run_study(params, small_prepared, tmp_path / "out", f"sqlite:///{tmp_path / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert max(trials[2].intermediate_values) < 3  # stopped before its last epoch
    # no trial that ran all its epochs is called pruned: the pruner only saves epochs still to come
    assert all(t.state == TrialState.COMPLETE for t in trials if len(t.intermediate_values) == 3)
    print({t.number: t.intermediate_values for t in trials})


def test_best_params_are_accepted_by_dvc_overrides_and_train(small_prepared, isolated_mlflow, tmp_path):
    """The overrides go through DVC's own ``-S`` code into params.yaml, and ``train`` takes the result."""
    from dvc.utils.hydra import apply_overrides

    from training.train import train
    from tuning.study import run_study

    run_study(tiny(tmp_path, trials=2, startup=5), small_prepared, tmp_path / "out")
    best = json.loads((tmp_path / "out/best_params.json").read_text())
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text())
    apply_overrides(params_file, best["overrides"])
    tuned = load_params(params_file, "cpu")
    assert tuned.train.lr == pytest.approx(best["params"]["train.lr"])
    assert tuned.model.width == best["params"]["model.width"]
    short_train = tuned.train.replace(epochs=1, batch_size=64, train_subset=0)
    short = tuned.replace(model=tuned.model.replace(depth=10), train=short_train)
    out = tmp_path / "train"
    files = (out / "m.safetensors", out / "ckpt", out / "log.csv", out / "run.json")
    summary = train(short, small_prepared, *files, show_progress=False)
    assert summary["final"]["val_acc"] >= 0 and (out / "m.safetensors").is_file()


@pytest.mark.full  # 20-minute budget: tests/stores/test_optuna_workers.py kills a worker mid-study
def test_a_killed_study_resumes_without_repeating_finished_trials(small_prepared, tmp_path):
    import optuna
    from optuna.trial import TrialState

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profiles"]["cpu"]["model"] = {"depth": 10, "width": 1, "dropout": 0.0}
    raw["profiles"]["cpu"]["train"] |= {"batch_size": 32, "warmup_epochs": 0.0}
    raw["tune"] |= {"startup_trials": 5}
    raw["stores"] |= {"optuna": f"sqlite:///{tmp_path / 'optuna.db'}"}
    raw["tune"]["profiles"]["cpu"] = {
        "trials": 3, "timeout_minutes": 10, "epochs": 3, "train_subset": 120, "val_images": 0,
        "space": {"train.lr": {"low": 0.01, "high": 0.1, "log": True}, "model.width": {"choices": [1]}},
    }  # fmt: skip
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    command = [sys.executable, "-m", "commands", "tune", "--params", str(params_file), "--profile", "cpu"]
    command += ["run"]
    command += ["--data", str(small_prepared), "--out", str(tmp_path / "out")]
    from tuning.space import study_name

    name = study_name(load_params(params_file, "cpu"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 300
    done: list = []
    while time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            continue
        done = study.get_trials(states=(TrialState.COMPLETE,))
        if done and study.get_trials(states=(TrialState.RUNNING,)):
            break
    assert first.poll() is None, first.stderr.read().decode()[-2000:]
    first.send_signal(signal.SIGKILL)  # in the middle of the next trial
    first.wait()
    before = {t.number: (t.params, t.value) for t in done}

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    study = optuna.load_study(study_name=name, storage=storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3  # the budget, not 3 more
    kept = {t.number: (t.params, t.value) for t in finished if t.number in before}
    assert kept == before  # the finished ones were kept, not run again
    killed = [t for t in study.get_trials() if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(killed) == 1  # the one the kill interrupted: failed (or still awaiting its heartbeat's expiry)
    summary = json.loads(second.stdout)
    assert summary["study"] == name and summary["best"]["trial"] in {t.number for t in finished}
    _, found = runs(env["MLFLOW_TRACKING_URI"])
    assert len([r for r in found if "mlflow.parentRunId" not in r.data.tags]) == 1  # one parent, resumed
