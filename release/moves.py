"""The moves that change what serves at a release's end: the halt, the rollout back, the new form."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from registry import aliases, release_record
from registry.release_record import ReleaseRecord
from release import tracking
from release.context import Context, triton_model

log = logging.getLogger("release.controller")


def halt(ctx: Context, record: ReleaseRecord, reason: str) -> float | None:
    """Stop the router sending anything to the candidate, before the slower rollout retires it.

    Writes ``router/halt.json`` into the repository the server reads (atomically, without the
    repository lock a rollout may hold): the router checks for it on every batch and latches it.
    Returns when it was written, or ``None`` when no router serves (the gate step).
    """
    import json
    import os
    import tempfile

    from serving.repository.spec import ROUTER, ROUTER_HALT_FILE

    if str(ctx.repository).startswith("s3://"):  # Triton loads a copy: no file reaches the router
        log.warning("the repository is in S3: the candidate stops at the rollout that retires it")
        return None
    folder = Path(ctx.repository) / ROUTER
    if record.step not in ("shadow", "canary") or not folder.is_dir():
        return None
    order = {
        "candidate_model": triton_model(ctx, record.candidate_name),
        "candidate_version": record.candidate_version,
        "reason": reason,
        "at": time.time(),
    }
    fd, tmp = tempfile.mkstemp(prefix=".halt-", dir=folder)
    with os.fdopen(fd, "w") as fh:
        json.dump(order, fh)
    os.chmod(tmp, 0o644)
    os.replace(tmp, folder / ROUTER_HALT_FILE)
    log.warning(
        "router halted: no new request goes to %s v%d", record.candidate_name, record.candidate_version
    )
    return time.time()


def end(ctx: Context, record: ReleaseRecord, outcome: str, note: dict) -> ReleaseRecord:
    """Record the outcome, drop the candidate's ``staging`` alias and serve production alone."""
    record = release_record.write(record.moved(outcome, note))
    if aliases.alias_version(record.candidate_name, "staging") == record.candidate_version:
        aliases.clear(record.candidate_name, "staging")
    ctx.sync()
    tracking.close_run(ctx, record, outcome)
    log.info(
        "release %s: production is %s", outcome, aliases.alias_version(record.production_name, "production")
    )
    return record


def route_to_candidate_form(ctx: Context, record: ReleaseRecord) -> None:
    """A candidate of another form now is production: the ensemble routes to that form from now on.

    That is a serving choice (:mod:`registry.serving_choice`), as ``cifar10 optimize`` records one,
    with ``params.yaml``'s batching, so ``sync`` and every later release follow it.
    """
    import datetime as dt

    from common.params import ALL_PRECISIONS
    from registry import serving_choice

    cfg, serving = ctx.params.registry, ctx.params.serving
    form = next(p for p in ALL_PRECISIONS if cfg.registered_name(p) == record.candidate_name)
    choice = serving_choice.ServingChoice(
        precision=form,
        version=record.candidate_version,
        preferred_batch_sizes=serving.preferred_batch_sizes,
        max_queue_delay_us=serving.max_queue_delay_us,
        instance_count=serving.instance_count,
        baseline_version=aliases.alias_version(cfg.registered_name("fp32"), "production") or 0,
        throughput_img_s=0.0,
        p99_ms=0.0,
        chosen_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        run_id=record.run_id,
        decided_by="cifar10-release",
    )
    serving_choice.record(cfg, ALL_PRECISIONS, choice)
