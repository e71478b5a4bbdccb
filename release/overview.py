"""A release as a command sees it: the :class:`Context` its options name, its status, its report.

Typed arguments only; the command (``cifar10 release``) reads its options and prints the answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common.params import Params
from release.answers import ReleaseReport, ReleaseStatus
from release.context import Context

DEFAULT_SERVER = "127.0.0.1:8001"


def release_context(
    params: Params,
    params_file: Path,
    server: str | None,
    repository: Path | str | None = None,
    cache: Path | None = None,
    admin_token_file: Path | None = None,
    prometheus_url: str | None = None,
    experiment: str = "cifar10-release",
    prepared: Path | None = None,
) -> Context:
    """What a release runs against; unset paths lie beside ``params_file`` (where sync, serve and DVC
    keep them too; the repository is ``stores.model_repository``, a folder or S3), an unset
    Prometheus URL is ``release.prometheus_url``.

    With a fleet in ``params.yaml`` every step reaches all of its replicas and the gate's probes go
    through its balancer; without one, ``server`` (default ``127.0.0.1:8001``) is the live server."""
    from common import stores
    from common.promql import Prometheus
    from serving.fleet.replicas import fleet_replicas
    from serving.server.environment import admin_header

    if params.fleet.named:
        if server:
            raise ValueError(
                f"--server {server}: params.yaml names a fleet, and every release step reaches all of it"
            )
        server = params.fleet.balancer or fleet_replicas(params.fleet, None)[0].grpc
    root = params_file.resolve().parent
    return Context(
        params=params,
        repository=str(repository)
        if repository
        else stores.resolve(params.stores, "model_repository", root=root).uri,
        cache=cache or root / "artifacts" / "registry_cache",
        server=server or DEFAULT_SERVER,
        header=admin_header(admin_token_file),
        prometheus=Prometheus(prometheus_url or params.release.prometheus_url),
        experiment=experiment,
        prepared=prepared or root / "data" / "prepared",
    )


def release_status(ctx: Context) -> ReleaseStatus:
    """The step, its window, the owner and the live figures against their limits (``{"release": None}``
    when no release was ever recorded; the last log entry when it has ended)."""
    from registry import release_record
    from release.context import window as step_window
    from release.controller import step_of
    from release.judge import judge

    name = ctx.params.registry.registered_name(ctx.form)
    record = release_record.read(name)
    if record is None:
        return {"release": None}
    out: ReleaseStatus = {
        "candidate": f"{record.candidate_name} v{record.candidate_version}",
        "production": f"{record.production_name} v{record.production_version}",
        "step": record.label,
        "forced_reason": record.forced_reason or None,
        "limits": record.limits or None,
    }
    if ctx.fleet:
        out["replicas"] = _replicas(ctx)
    if not record.active:
        return out | {"ended": record.log[-1] if record.log else None}
    owner = record.owner
    cfg = ctx.params.release
    out["owner"] = owner and {
        "host": owner.host,
        "pid": owner.pid,
        "heartbeat_s_ago": round(time.time() - owner.heartbeat, 1),
        "alive": owner.alive(cfg.owner_timeout_s),
    }
    if record.step == "gate":
        return out
    length = step_window(ctx, record.step)
    out["window"] = {"elapsed_s": round(time.time() - record.step_started_at, 1), "length_s": length}
    step = step_of(ctx, record, record.step_started_at + cfg.latency_settle_s)
    verdict, _ = judge(ctx.prometheus, step, cfg, time.time(), None)
    out["candidate_images"] = round(verdict.images)
    out["figures"] = [f.row() for f in verdict.figures]
    return out


def _replicas(ctx: Context) -> list[dict]:
    """Each replica's READY versions, and whether it serves what the repository says."""
    from serving.fleet.replicas import fleet_replicas
    from serving.fleet.status import replica_states
    from serving.repository.targets import open_repository

    spec = open_repository(ctx.repository, ctx.cache).deployed_spec()
    return replica_states(fleet_replicas(ctx.params.fleet, None), ctx.header, spec)


def report_latest_release(ctx: Context, out: Path) -> ReleaseReport:
    """Write the per-version table (JSON) and PNG of the latest release under ``out``, log them to the
    release's MLflow run; returns the table's rows and the files written."""
    from registry import release_record
    from registry.store import RegistryError
    from release import report
    from release.context import triton_model

    name = ctx.params.registry.registered_name(ctx.form)
    record = release_record.read(name)
    if record is None:
        raise RegistryError(f"no release recorded on {name}")
    end = time.time() if record.active else record.log[-1]["at"] + 5
    models = (triton_model(ctx, record.production_name), triton_model(ctx, record.candidate_name))
    files = report.write(ctx.prometheus, record, models, out, end)
    if record.run_id:
        from release.tracking import _client

        for path in files.values():
            _client().log_artifact(record.run_id, str(path), "report")
    rows = json.loads(files["json"].read_text())["versions"]
    return ReleaseReport(rows, files)
