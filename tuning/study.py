"""The ``tune`` stage: a seeded TPE study with pruning, resumable from Optuna's sqlite storage.

The study lives in ``stores.optuna`` (sqlite beside ``mlflow.db`` by default, PostgreSQL for a team
whose workers share one study: ``docs/stores.md``) under a name derived from what it
searches (:func:`tuning.space.study_name`), so running the stage again continues it: finished trials
(complete or pruned) count against ``trials``, the wall time already spent counts against
``timeout_minutes``, and a trial whose process was killed is failed by Optuna's heartbeat and not
counted. The study is one MLflow parent run (resumed too), each trial a nested child run. Its first
trial is the profile's own settings (the baseline), so the best one is judged against them.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, TypedDict

from common import stores
from common.fsutil import write_json
from common.params import Params
from training.prepare import load_arrays
from tuning import space
from tuning.trial import Pruned, TrialData, fit

log = logging.getLogger(__name__)
EXPERIMENT = "cifar10-tune"
GRACE_BEATS = 3  # a running trial silent for this many heartbeats died with its process


def _study(params: Params, storage_url: str):
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    cfg = params.tune

    def storage():
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9; it resumes
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                storage_url,
                heartbeat_interval=cfg.heartbeat_s,
                grace_period=GRACE_BEATS * cfg.heartbeat_s,
                # a dead worker's trial is failed by whichever worker notices, and its settings run again
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )

    storage = _first_creates_the_tables(storage)
    if cfg.pruner == "median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs
        )
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, cfg.warmup_epochs))
    return optuna.create_study(
        storage=storage,
        study_name=space.study_name(params),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.sampler_seed),
        pruner=pruner,
        load_if_exists=True,
    )


def _first_creates_the_tables(make, attempts: int = 6):
    """``make()``, again while another worker is creating Optuna's tables in the same database.

    Workers started together on an empty PostgreSQL database both issue ``CREATE TABLE``; the loser
    gets a unique violation on PostgreSQL's catalog. Once the winner is done, the tables exist.
    """
    import sqlalchemy

    for attempt in range(attempts - 1):
        try:
            return make()
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            log.info("another worker is creating the study's tables; trying again")
            time.sleep(0.5 * (attempt + 1))
    return make()  # the last try: its error, if any, is the caller's


def finished(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


class StudySummary(TypedDict, total=False):
    """``reports/tune/summary.json``: the study, its trials, and the baseline and best trials."""

    study: str
    profile: str
    trials: dict[str, int]
    wall_s: float
    budget: dict[str, Any]
    baseline: dict[str, Any]
    best: dict[str, Any]


def run_study(params: Params, prepared: Path, out_dir: Path, storage_url: str | None = None) -> StudySummary:
    """Run (or continue) the study to its budget; write the best settings and evidence to ``out_dir``."""
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from common import tracking

    budget = params.tune.budget
    storage_url = stores.resolve(params.stores, "optuna", option=storage_url).uri
    study = _study(params, storage_url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if not study.trials:
        start = space.baseline(params, budget.space)
        if start is not None:
            study.enqueue_trial(start, user_attrs={"baseline": True}, skip_if_exists=True)
    arrays = tuple(load_arrays(prepared, "train_x", "train_y", "val_x", "val_y"))
    data = TrialData.pick(arrays, budget.train_subset, budget.val_images, params.train.seed)

    tracking.configure()
    experiment_id = tracking.ensure_experiment(EXPERIMENT)
    parent_id = study.user_attrs.get("mlflow_run_id")
    with mlflow.start_run(run_id=parent_id, experiment_id=None if parent_id else experiment_id,
                          run_name=None if parent_id else study.study_name) as parent:  # fmt: skip
        if parent_id is None:
            study.set_user_attr("mlflow_run_id", parent.info.run_id)
            mlflow.log_params(
                {"profile": params.profile, "study": study.study_name, "storage": stores.redact(storage_url)}
            )
            mlflow.log_params({f"budget.{k}": v for k, v in _budget_params(params).items()})
        remaining = budget.trials - len(finished(study))
        seconds_left = budget.timeout_minutes * 60 - float(study.user_attrs.get("elapsed_s", 0.0))
        if remaining > 0 and seconds_left > 0:
            started = time.monotonic()
            spent = float(study.user_attrs.get("elapsed_s", 0.0))

            def note_time(study, trial) -> None:
                study.set_user_attr("elapsed_s", spent + time.monotonic() - started)

            # Several workers may share the study (stores.optuna on PostgreSQL): the budget is the
            # study's, so each stops once the finished trials reach it, whoever finished them.
            enough = optuna.study.MaxTrialsCallback(
                budget.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
            study.optimize(
                lambda trial: _objective(trial, params, data, parent.info.experiment_id),
                n_trials=remaining,
                timeout=seconds_left,
                callbacks=[enough, note_time],
                catch=(FloatingPointError,),
                gc_after_trial=True,
            )
        summary = _summarise(study, params, out_dir)
        _log_parent(study, summary, out_dir)
    return summary


def _budget_params(params: Params) -> dict:
    b = params.tune.budget
    out = {"trials": b.trials, "timeout_minutes": b.timeout_minutes, "epochs": b.epochs}
    out |= {"train_subset": b.train_subset, "val_images": b.val_images, "pruner": params.tune.pruner}
    return out | {f"space.{k}": str(v) for k, v in b.space.items()}


def _objective(trial, params: Params, data: TrialData, experiment_id: str) -> float:
    import mlflow
    import optuna

    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    point = space.suggest(trial, params.tune.budget.space)
    with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, experiment_id=experiment_id) as run:
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        mlflow.log_params(point | {"trial": trial.number})

        def report(epoch: int, accuracy: float) -> bool:
            trial.report(accuracy, epoch)
            return trial.should_prune()

        def log_epoch(epoch: int, row: dict) -> None:
            mlflow.log_metrics({k: float(v) for k, v in row.items()}, step=epoch)

        try:
            value = fit(space.apply(params, point), data, params.tune.budget.epochs, report, log_epoch)
        except Pruned as exc:
            mlflow.set_tag("optuna.state", "PRUNED")
            mlflow.set_tag("pruned_after_epoch", str(exc.epoch))
            raise optuna.TrialPruned(str(exc)) from None
        except FloatingPointError as exc:
            mlflow.set_tag("optuna.state", "FAIL")
            mlflow.set_tag("failure", str(exc))
            raise
        mlflow.set_tag("optuna.state", "COMPLETE")
        mlflow.log_metric("val_acc_final", value)
    return value


def _summarise(study, params: Params, out_dir: Path) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    summary: StudySummary = {
        "study": study.study_name,
        "profile": params.profile,
        "trials": {k: v for k, v in counts.items() if v},
        "wall_s": round(float(study.user_attrs.get("elapsed_s", 0.0)), 1),
        "budget": _budget_params(params),
    }
    base = next((t for t in trials if t.user_attrs.get("baseline")), None)
    if base is not None and base.intermediate_values:
        last = max(base.intermediate_values)
        value = base.intermediate_values[last]
        summary["baseline"] = {"trial": base.number, "val_acc": value, "epochs": last, "params": base.params}
        summary["baseline"]["state"] = base.state.name
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary["best"] = {
            "trial": best.number,
            "val_acc": best.value,
            "params": best.params,
            "overrides": space.overrides(params.profile, best.params),
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        }
        write_json(out_dir / "best_params.json", summary["best"] | {"profile": params.profile})
    write_json(out_dir / "summary.json", summary)
    return summary


def _log_parent(study, summary: dict, out_dir: Path) -> None:
    """Best trial, counts and the optimisation-history and importance plots on the parent run."""
    import mlflow

    from tuning.plots import plot_study

    mlflow.log_metrics({f"trials_{k}": v for k, v in summary["trials"].items()})
    mlflow.log_metric("wall_s", summary["wall_s"])
    if "baseline" in summary:
        mlflow.log_metric("baseline_val_acc", summary["baseline"]["val_acc"])
    if "best" in summary:
        mlflow.log_metric("best_val_acc", summary["best"]["val_acc"])
        mlflow.set_tags({"best_trial": str(summary["best"]["trial"])})
        mlflow.log_dict(summary["best"], "best_params.json")
    for path in plot_study(study, out_dir):
        mlflow.log_artifact(str(path))
    mlflow.log_text(json.dumps(summary, indent=2), "summary.json")
