"""A release in MLflow: one run per release, a nested run per step with its figures and decision.

The runs are written through ``MlflowClient`` by id, never through ``mlflow.start_run``'s active run,
so a controller that resumes a release (another process) keeps writing into the same run.
"""

from __future__ import annotations

import json
import time

from mlflow.tracking import MlflowClient

from common import tracking as common_tracking
from registry.release_record import ReleaseRecord


def _client() -> MlflowClient:
    return MlflowClient(common_tracking.configure())


def open_run(
    ctx, name: str, version: int, production_name: str, production: int, force_reason: str | None
) -> str:
    experiment = common_tracking.ensure_experiment(ctx.experiment)
    c = _client()
    run = c.create_run(
        experiment,
        run_name=f"release {name} v{version}",
        tags={
            "release.candidate": f"{name} v{version}",
            "release.production": f"{production_name} v{production}",
        }
        | ({"release.forced_reason": force_reason} if force_reason else {}),
    )
    cfg = ctx.params.release
    params = {
        "candidate_version": version,
        "production_version": production,
        "model": name,
        "canary_weights": json.dumps(list(cfg.canary_weights)),
        "shadow_fraction": cfg.shadow_fraction,
        "shadow_window_s": cfg.shadow_window_s,
        "canary_window_s": cfg.canary_window_s,
        "min_images": cfg.min_images,
        "max_error_ratio": cfg.max_error_ratio,
        "max_p99_ratio": cfg.max_p99_ratio,
        "max_psi": cfg.max_psi,
        "accuracy_margin": cfg.accuracy_margin,
        "forced": bool(force_reason),
    }
    for key, value in params.items():
        c.log_param(run.info.run_id, key, str(value))
    return run.info.run_id


def log_step(ctx, record: ReleaseRecord, label: str, metrics: dict, notes: dict, decision: str) -> None:
    """A nested run holding one step's figures and what was decided on them."""
    if not record.run_id:
        return
    c = _client()
    parent = c.get_run(record.run_id)
    run = c.create_run(
        parent.info.experiment_id,
        run_name=f"{label}: {decision}",
        tags={"mlflow.parentRunId": record.run_id, "release.step": label, "release.decision": decision}
        | {f"gate.{k}": v[:5000] for k, v in notes.items()},
    )
    now = int(time.time() * 1000)
    for key, value in metrics.items():
        c.log_metric(run.info.run_id, key, float(value), timestamp=now)
        c.log_metric(
            record.run_id, f"{label.replace(' ', '_').replace('%', 'pct')}.{key}", float(value), timestamp=now
        )
    c.set_terminated(run.info.run_id)


def close_run(ctx, record: ReleaseRecord, outcome: str) -> None:
    if not record.run_id:
        return
    c = _client()
    c.set_tag(record.run_id, "release.outcome", outcome)
    c.log_text(record.run_id, json.dumps(list(record.log), indent=2), "release_log.json")
    status = {"promoted": "FINISHED", "aborted": "KILLED"}.get(outcome, "FAILED")
    c.set_terminated(record.run_id, status=status)
