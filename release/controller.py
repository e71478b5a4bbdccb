"""The release controller: gate -> shadow -> canary steps -> production, or back to production.

Every transition is written to the registry first (:mod:`registry.release_record`, with this process
as owner) and only then served (:func:`registry.sync.sync` rolls the live server to what the record
says, with no failed request). So a crash at any point leaves the registry naming the step and its
owner, and starting the controller again re-applies that step and carries on from it. The candidate
holds the ``staging`` alias during the release and ``production`` after it, so both moves land in the
aliases' history; each step's figures and decision are a nested MLflow run under the release's run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from common import exit_codes
from common.exit_codes import ExitError
from common.params import Params
from registry import aliases, release_claim, release_record, store
from registry.release_claim import ReleaseBusy
from registry.release_record import Owner, ReleaseRecord
from release import gate, limits, tracking
from release.judge import Step, Verdict, judge
from release.prometheus import Prometheus, PrometheusUnavailable

__all__ = ["Context", "ReleaseBusy", "ReleaseFailed", "abort", "start"]

log = logging.getLogger(__name__)


class ReleaseFailed(ExitError):
    """The gate refused the candidate, or a step breached and the release was rolled back (1)."""

    exit_code = exit_codes.FAILED


@dataclass(frozen=True)
class Context:
    params: Params
    repository: Path
    cache: Path
    server: str  # gRPC host:port of the live server
    header: tuple[str, str] | None
    prometheus: Prometheus
    experiment: str = "cifar10-release"
    prepared: Path = Path("data/prepared")  # where production is scored on the candidate's test rows

    @property
    def form(self) -> str:
        """The form the public ensemble routes to (a cifar10-optimize choice, else params.yaml)."""
        from common.params import ALL_PRECISIONS
        from registry import serving_choice

        choice = serving_choice.read(self.params.registry, ALL_PRECISIONS)
        return choice.precision if choice else self.params.registry.ensemble_target

    def sync(self) -> dict:
        from registry.sync import sync
        from serving.rollout.apply import ApplyError

        for attempt in range(240):  # another rollout of this repository (an abort, say) holds the lock
            try:
                return sync(self.params, self.repository, self.cache, self.server, self.header)
            except ApplyError as exc:
                if "being rewritten by another" not in str(exc) or attempt == 239:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")


def steps(ctx: Context) -> list[tuple[str, int, float, float]]:
    """``(step, index, shadow_fraction, canary_weight)`` in order."""
    cfg = ctx.params.release
    out = [("shadow", 0, cfg.shadow_fraction, 0.0)]
    return out + [("canary", i + 1, 0.0, w) for i, w in enumerate(cfg.canary_weights)]


def start(ctx: Context, version: int, precision: str | None, force_reason: str | None) -> dict:
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
                f"{record.label}; `cifar10-release abort` first"
            )
        owner = record.owner
        if owner is not None and owner.alive(cfg.owner_timeout_s):
            raise ReleaseBusy(f"the release is driven by pid {owner.pid} on {owner.host}")
        election = release_claim.elect(name, me, cfg.claim_settle_s, cfg.owner_timeout_s)
        record = release_claim.take(election, name, dataclasses.replace(record, owner=me))
        log.info("resuming the release of %s v%d at step %s", name, version, record.label)
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


def open_release(ctx: Context, record: ReleaseRecord) -> ReleaseRecord:
    """The gate: classes, parity, accuracy on the same data, and an answer from the live server.

    ``record`` is at step ``gate``, owned by this process. A refusal ends it as ``refused`` (with its
    MLflow run), so ``status`` and ``report`` say what was refused and why.
    """
    from release.baseline import ProductionScorer

    cfg = ctx.params.release
    name, candidate_name, version = record.production_name, record.candidate_name, record.candidate_version
    force_reason = record.forced_reason or None
    production = aliases.resolve(name, version=record.production_version)
    candidate = aliases.resolve(candidate_name, version=version)
    run_id = tracking.open_run(ctx, candidate_name, version, name, production.version, force_reason)
    record = release_record.write(dataclasses.replace(record, run_id=run_id))
    c = store.client()
    production_classes = _classes(c, name, production)
    result = gate.offline(
        candidate,
        production,
        cfg,
        _classes(c, candidate_name, candidate),
        production_classes,
        ProductionScorer(name, production.version, ctx.prepared, ctx.cache),
    )
    for check in result.checks:
        log.info("gate %s: %s (%s)", check.name, "passed" if check.passed else "FAILED", check.detail)
    derived = limits.derive(result.baseline or _own_figures(production), production_classes, cfg)
    record = release_record.write(dataclasses.replace(record, limits=derived.to_dict()))
    if result.unforceable or (result.failing and not force_reason):  # before the server sees it
        _refuse(ctx, record, result, served=False)
    aliases.promote(candidate_name, "staging", version)
    from registry import tags
    from serving.rollout.apply import ApplyError

    loaded = True
    try:
        ctx.sync()  # loads the candidate beside production; nothing routes to it yet
    except ApplyError as exc:  # apply restored the previous repository: production serves as before
        loaded = False
        live = gate.Check("live", False, f"{candidate_name} v{version} did not load: {exc}", forceable=False)
    if loaded:
        model_tags = store.registered_model(c, candidate_name).tags
        live = gate.answers(
            ctx.server,
            triton_model(ctx, candidate_name),
            version,
            tags.tensor_name(model_tags, "input", "input", candidate_name),
            tags.tensor_name(model_tags, "output", "logits", candidate_name),
        )
    result = result.with_check(live)
    log.info("gate %s: %s (%s)", live.name, "passed" if live.passed else "FAILED", live.detail)
    if result.unforceable or (not live.passed and not force_reason):
        _refuse(ctx, record, result, served=True)
    failing = result.failing
    tracking.log_step(
        ctx, record, "gate", {}, {c.name: c.detail for c in result.checks}, "forced" if failing else "passed"
    )
    if failing:
        log.warning("gate overridden with --force (%s): %s", force_reason, "; ".join(c.name for c in failing))
    log.info("live limits: %s", derived.basis)
    return record


def _classes(c, name: str, version: aliases.Resolved) -> tuple[str, ...]:
    from registry import tags

    return tags.version_classes(version.tags, dict(store.registered_model(c, name).tags), name)


def _own_figures(production: aliases.Resolved) -> limits.Baseline | None:
    """Production's figures on its own test data: what sets the live limits of a forced release whose
    accuracy could not be compared on the candidate's data."""
    from registry import tags

    own = tags.accuracy(production.tags)
    if own is None:
        return None
    return limits.Baseline(
        own[0], own[1], tags.class_precision(production.tags), "production's own test data"
    )


def _refuse(ctx: Context, record: ReleaseRecord, result: gate.GateResult, served: bool) -> None:
    failing = result.failing
    failed = [f"{c.name}: {c.detail}" for c in failing]
    tracking.log_step(ctx, record, "gate", {}, {c.name: c.detail for c in result.checks}, "refused")
    if served:
        end(ctx, record, "refused", {"failed": failed})
    else:  # nothing was staged or served: the record and the run end here
        record = release_record.write(record.moved("refused", {"failed": failed}))
        tracking.close_run(ctx, record, "refused")
    forced = " (cannot be forced)" if result.unforceable else ""
    raise ReleaseFailed(
        f"gate refused {record.candidate_name} v{record.candidate_version}{forced}: " + "; ".join(failed)
    )


def drive(ctx: Context, record: ReleaseRecord) -> dict:
    """From the record's step to production, judging each step; a breach rolls back and raises."""
    cfg = ctx.params.release
    plan = steps(ctx)
    position = 0
    if record.step in ("shadow", "canary"):
        position = next(i for i, s in enumerate(plan) if (s[0], s[1]) == (record.step, record.step_index))
    baseline_p99: float | None = None
    for step, index, shadow, weight in plan[position:]:
        if (record.step, record.step_index) != (step, index):
            _check_still_mine(record)
            record = record.moved(
                step, {"by": "controller"}, step_index=index, shadow_fraction=shadow, canary_weight=weight
            )
        record = release_record.write(record)
        ctx.sync()
        settled = time.time() + cfg.latency_settle_s  # latency counts from here (release.latency)
        log.info("step %s: serving; judged over %s", record.label, _window(ctx, step))
        verdict, baseline_p99, outcome = watch(ctx, record, baseline_p99, settled)
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
    aliases.promote(record.candidate_name, "production", record.candidate_version)
    if record.candidate_name != record.production_name:
        _route_to_candidate_form(ctx, record)
    end(ctx, record, "promoted", {})
    return {"promoted": f"{record.candidate_name} v{record.candidate_version}", "run_id": record.run_id}


def _seconds(halted: float | None, verdict_at: float) -> str:
    return "with the rollout" if halted is None else f"{halted - verdict_at:.2f} s after it"


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


def _figures(verdict: Verdict) -> str:
    if verdict.breaches:
        return "; ".join(
            f"{f.name} {f.value:.4g} beyond {f.limit:.4g} ({f.detail})" for f in verdict.breaches
        )
    pending = [f for f in verdict.figures if not f.within]
    text = "; ".join(
        f"{f.name} {f.value if f.value is None else round(f.value, 4)} ({f.detail})" for f in pending
    )
    return f"{verdict.images:.0f} candidate images; not within the limits: {text or 'none'}"


def _window(ctx: Context, step: str) -> float:
    cfg = ctx.params.release
    return cfg.shadow_window_s if step == "shadow" else cfg.canary_window_s


def step_of(ctx: Context, record: ReleaseRecord, latency_since: float = 0.0) -> Step:
    """What the judge holds a recorded step to (the limits fixed at its gate)."""
    fixed = limits.Limits.from_dict(record.limits)
    if fixed is None:  # a record written before limits were recorded: derive them from the tags now
        production = aliases.resolve(record.production_name, version=record.production_version)
        classes = _classes(store.client(), record.production_name, production)
        fixed = limits.derive(_own_figures(production), classes, ctx.params.release)
    return Step(
        candidate=(triton_model(ctx, record.candidate_name), record.candidate_version),
        production=(triton_model(ctx, record.production_name), record.production_version),
        shadow=record.step == "shadow",
        started_at=record.step_started_at,
        release_started_at=record.started_at,
        limits=fixed,
        latency_since=latency_since,
    )


def watch(
    ctx: Context, record: ReleaseRecord, baseline_p99: float | None, settled: float
) -> tuple[Verdict, float | None, str]:
    """Judge the step every ``check_interval_s`` until it passes, breaches or stays inconclusive too long."""
    cfg = ctx.params.release
    window = _window(ctx, record.step)
    passes_at, gives_up_at = record.step_started_at + window, record.step_started_at + 3 * window
    step = step_of(ctx, record, settled)
    blind_since: float | None = None
    while True:
        time.sleep(max(0.0, min(cfg.check_interval_s, passes_at - time.time())) or cfg.check_interval_s)
        _check_still_mine(record)
        now = time.time()
        try:
            verdict, production_p99 = judge(ctx.prometheus, step, cfg, now, baseline_p99)
            blind_since = None
        except PrometheusUnavailable as exc:  # a hiccup is waited out; a step judged blind is not passed
            blind_since = blind_since or now
            log.warning("cannot judge step %s: %s", record.label, exc)
            record = release_record.write(record)
            if now - blind_since > max(window, 3 * cfg.check_interval_s):
                return Verdict(0.0), baseline_p99, f"Prometheus unavailable for {now - blind_since:.0f} s"
            continue
        baseline_p99 = production_p99 or baseline_p99
        record = release_record.write(record)  # the heartbeat
        if verdict.breaches:
            return verdict, baseline_p99, "breach"
        if now >= passes_at and verdict.passes(cfg.min_images):
            return verdict, baseline_p99, "passed"
        if now >= gives_up_at:
            return verdict, baseline_p99, "inconclusive"


def triton_model(ctx: Context, registered_name: str) -> str:
    """The Triton model that serves a registered model's versions."""
    from common.params import ALL_PRECISIONS

    cfg = ctx.params.registry
    form = next(p for p in ALL_PRECISIONS if cfg.registered_name(p) == registered_name)
    return cfg.triton_name(form)


def _route_to_candidate_form(ctx: Context, record: ReleaseRecord) -> None:
    """A candidate of another form now is production: the ensemble routes to that form from now on.

    That is a serving choice (:mod:`registry.serving_choice`), as ``cifar10-optimize`` records one,
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


def _check_still_mine(record: ReleaseRecord) -> None:
    """Stop if someone aborted the release or another controller took it over since we last wrote."""
    current = release_record.read(record.production_name)
    if current is None or not current.active or record.owner is None or not record.owner.same(current.owner):
        raise ReleaseFailed(
            f"the release was ended or taken over elsewhere (now: {current.label if current else 'none'})"
        )


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


def abort(ctx: Context, reason: str) -> dict:
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
