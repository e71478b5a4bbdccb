"""The release controller: gate -> shadow -> canary steps -> production, or back to production.

Every transition is written to the registry first (:mod:`registry.release_record`, with this process
as owner) and only then served (:func:`registry.sync.sync` rolls the live server to what the record
says, with no failed request). So a crash at any point leaves the registry naming the step and its
owner, and starting the controller again re-applies that step and carries on from it. Two starts at
the same instant elect one owner first (:mod:`registry.release_claim`). The candidate holds the
``staging`` alias during the release and ``production`` after it, so both moves land in the aliases'
history; each step's figures and decision are a nested MLflow run under the release's run.

One write precedes the record: on a breach or an abort, :func:`halt` tells the router to stop sending
anything to the candidate before the (slower) rollout retires it. It can only take traffic away from
the candidate, never give it, so it needs no owner.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from common.promql import PrometheusUnavailable
from registry import aliases, release_claim, release_record, store
from registry.release_claim import ReleaseBusy
from registry.release_record import Owner, ReleaseRecord
from release import limits, tracking
from release.admission import open_release, own_figures, shadow_probe, version_classes
from release.answers import Aborted, Promoted
from release.context import Context, ReleaseFailed, check_still_mine, steps, triton_model, window
from release.judge import Step, Verdict, judge
from release.moves import end, halt, route_to_candidate_form

__all__ = ["Context", "ReleaseBusy", "ReleaseFailed", "abort", "start", "step_of"]

log = logging.getLogger(__name__)


def start(ctx: Context, version: int, precision: str | None, force_reason: str | None) -> Promoted:
    """Run a release of ``version`` to its end (or resume the one in progress); returns the outcome.

    Two starts at the same instant elect one owner (:mod:`registry.release_claim`); the other exits 2.
    """
    cfg = ctx.params.release
    form = ctx.form
    name = ctx.params.registry.registered_name(form)
    candidate_name = ctx.params.registry.registered_name(precision or form)
    record = release_record.read(name)
    me = Owner.me()
    if record is not None and record.active:
        if (record.candidate_name, record.candidate_version) != (candidate_name, version):
            raise ReleaseBusy(
                f"a release of {record.candidate_name} v{record.candidate_version} is at step "
                f"{record.label}; `cifar10 release abort` first"
            )
        owner = record.owner
        if owner is not None and owner.alive(cfg.owner_timeout_s):
            raise ReleaseBusy(f"the release is driven by pid {owner.pid} on {owner.host}")
        election = release_claim.elect(name, me, cfg.claim_settle_s, cfg.owner_timeout_s)
        try:  # an abort during the election ends the release: nothing to resume then
            current = release_record.read(name)
        except Exception:
            release_claim.withdraw(name, me.token)
            raise
        if current is None or not current.active or current.started_at != record.started_at:
            release_claim.withdraw(name, me.token)
            raise ReleaseBusy(
                f"the release changed while claiming it (now: {current.label if current else 'none'})"
            )
        record = release_claim.take(election, name, dataclasses.replace(current, owner=me))
        if record.step in ("shadow", "canary"):
            # The step's window restarts: the time nobody owned it (the dead owner's last seconds, the
            # restart, the new rollout) is not evidence, and judging a window mostly spent unowned would
            # call a good candidate inconclusive for the outage alone.
            record = dataclasses.replace(record, step_started_at=time.time())
        log.info(
            "resuming the release of %s v%d at step %s (its window restarts)", name, version, record.label
        )
        if record.step == "gate":  # the previous owner died inside the gate: judge it again, whole
            record = open_release(ctx, record)
        return drive(ctx, record)
    production = aliases.resolve(name, "production")
    aliases.resolve(candidate_name, version=version)  # exists, or exit 5 before anything is claimed
    if (candidate_name, version) == (name, production.version):
        raise ReleaseBusy(f"{name} v{version} already is production")
    election = release_claim.elect(name, me, cfg.claim_settle_s, cfg.owner_timeout_s)
    now = time.time()
    record = ReleaseRecord(
        candidate_name=candidate_name,
        candidate_version=version,
        production_name=name,
        production_version=production.version,
        step="gate",
        started_at=now,
        step_started_at=now,
        owner=me,
        forced_reason=force_reason or "",
    )
    record = release_claim.take(election, name, record.moved("gate", {"by": "start"}))
    return drive(ctx, open_release(ctx, record))


def drive(ctx: Context, record: ReleaseRecord) -> Promoted:
    """From the record's step to production, judging each step; a breach rolls back and raises."""
    cfg = ctx.params.release
    plan = steps(ctx)
    position = 0
    if record.step in ("shadow", "canary"):
        position = next(
            i for i, s in enumerate(plan) if (s.name, s.index) == (record.step, record.step_index)
        )
    baseline_p99: float | None = None
    for planned in plan[position:]:
        step, index, shadow, weight = (
            planned.name,
            planned.index,
            planned.shadow_fraction,
            planned.canary_weight,
        )
        if (record.step, record.step_index) != (step, index):
            check_still_mine(record)
            record = record.moved(
                step, {"by": "controller"}, step_index=index, shadow_fraction=shadow, canary_weight=weight
            )
        check_still_mine(record)
        record = release_record.write(record)
        ctx.sync()
        # The window opens once the step serves: a rollout slowed by a busy host or a registry outage
        # must not eat the window, nor the time allowed before "inconclusive".
        opened = time.time()
        log.info("step %s: serving; judged over %s", record.label, window(ctx, step))
        measured = ()
        if step == "shadow" and (probed := shadow_probe(ctx, record)) is not None:
            measured = (probed,)
        settled = time.time() + cfg.latency_settle_s  # after the rollout and the probe (release.latency)
        verdict, baseline_p99, outcome = watch(ctx, record, baseline_p99, settled, measured, opened)
        tracking.log_step(ctx, record, record.label, verdict.metrics(), {}, outcome)
        if outcome != "passed":
            verdict_at = time.time()
            halted = halt(ctx, record, f"step {record.label}: {outcome}")
            end(
                ctx,
                record,
                "rolled_back",
                {
                    "breach": [f.row() for f in verdict.breaches],
                    "why": outcome,
                    "verdict_at": verdict_at,
                    "halted_s": None if halted is None else round(halted - verdict_at, 3),
                },
            )
            seconds = time.time() - verdict_at
            raise ReleaseFailed(
                f"step {record.label}: {outcome} -> rolled back; production {record.production_name} "
                f"v{record.production_version} serves alone again ({seconds:.1f} s after the verdict, "
                f"the candidate's routing stopped {_seconds(halted, verdict_at)}): " + _figures(verdict)
            )
    check_still_mine(record)  # an abort since the last check keeps production where it is
    aliases.promote(record.candidate_name, "production", record.candidate_version)
    if record.candidate_name != record.production_name:
        route_to_candidate_form(ctx, record)
    end(ctx, record, "promoted", {})
    return {"promoted": f"{record.candidate_name} v{record.candidate_version}", "run_id": record.run_id}


def _seconds(halted: float | None, verdict_at: float) -> str:
    return "with the rollout" if halted is None else f"{halted - verdict_at:.2f} s after it"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _figures(verdict: Verdict) -> str:
    if verdict.breaches:
        return "; ".join(
            f"{f.name} {_num(f.value)} beyond {_num(f.limit)} ({f.detail})" for f in verdict.breaches
        )
    pending = [f for f in verdict.figures if not f.within]
    text = "; ".join(
        f"{f.name} {f.value if f.value is None else round(f.value, 4)} ({f.detail})" for f in pending
    )
    return f"{verdict.images:.0f} candidate images; not within the limits: {text or 'none'}"


def step_of(ctx: Context, record: ReleaseRecord, latency_since: float = 0.0) -> Step:
    """What the judge holds a recorded step to (the limits fixed at its gate)."""
    fixed = limits.Limits.from_dict(record.limits)
    if fixed is None:  # a record written before limits were recorded: derive them from the tags now
        production = aliases.resolve(record.production_name, version=record.production_version)
        classes = version_classes(store.client(), record.production_name, production)
        fixed = limits.derive(own_figures(production), classes, ctx.params.release)
    return Step(
        candidate=(triton_model(ctx, record.candidate_name), record.candidate_version),
        production=(triton_model(ctx, record.production_name), record.production_version),
        shadow=record.step == "shadow",
        started_at=record.step_started_at,
        release_started_at=record.started_at,
        limits=fixed,
        latency_since=latency_since,
        accuracy_drop=ctx.params.monitoring.accuracy_drop,
    )


def watch(
    ctx: Context,
    record: ReleaseRecord,
    baseline_p99: float | None,
    settled: float,
    measured: tuple = (),
    opened: float | None = None,
) -> tuple[Verdict, float | None, str]:
    """Judge the step every ``check_interval_s`` until it passes, breaches or stays inconclusive too long.

    ``opened``: when the step started serving (its window's start); the record's step start if unset.
    """
    cfg = ctx.params.release
    length = window(ctx, record.step)
    opened = record.step_started_at if opened is None else opened
    passes_at, gives_up_at = opened + length, opened + 3 * length
    step = dataclasses.replace(step_of(ctx, record, settled), measured=measured, started_at=opened)
    blind_since: float | None = None
    while True:
        time.sleep(max(0.0, min(cfg.check_interval_s, passes_at - time.time())) or cfg.check_interval_s)
        check_still_mine(record)
        now = time.time()
        try:
            verdict, production_p99 = judge(ctx.prometheus, step, cfg, now, baseline_p99)
            blind_since = None
        except PrometheusUnavailable as exc:  # a hiccup is waited out; a step judged blind is not passed
            blind_since = blind_since or now
            log.warning("cannot judge step %s: %s", record.label, exc)
            check_still_mine(record)
            record = release_record.write(record)
            if now - blind_since > max(length, 3 * cfg.check_interval_s):
                return Verdict(0.0), baseline_p99, f"Prometheus unavailable for {now - blind_since:.0f} s"
            continue
        baseline_p99 = production_p99 or baseline_p99
        check_still_mine(record)  # right before the write: an abort meanwhile must not be overwritten
        record = release_record.write(record)  # the heartbeat
        if verdict.breaches:
            return verdict, baseline_p99, "breach"
        if now >= passes_at and verdict.passes(cfg.min_images):
            return verdict, baseline_p99, "passed"
        if now >= gives_up_at:
            return verdict, baseline_p99, "inconclusive"


def abort(ctx: Context, reason: str) -> Aborted:
    """Back to production at once; a controller driving the release stops at its next check."""
    name = ctx.params.registry.registered_name(ctx.form)
    record = release_record.active(name)
    if record is None:
        raise store.RegistryError(f"no release in progress on {name}")
    halted = halt(ctx, record, f"aborted: {reason}")
    record = end(ctx, record, "aborted", {"reason": reason, "halted_at": halted})
    return {
        "aborted": f"{record.candidate_name} v{record.candidate_version}",
        "production": record.production_version,
    }
