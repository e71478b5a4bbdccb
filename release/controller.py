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
from registry import aliases, release_record, store
from registry.release_record import ReleaseRecord
from release import gate, tracking
from release.judge import Step, Verdict, judge
from release.prometheus import Prometheus, PrometheusUnavailable

log = logging.getLogger(__name__)


class ReleaseFailed(ExitError):
    """The gate refused the candidate, or a step breached and the release was rolled back (1)."""

    exit_code = exit_codes.FAILED


class ReleaseBusy(ExitError):
    """Another release is in progress, or its owner is still alive (exit code 2)."""

    exit_code = exit_codes.USAGE


@dataclass(frozen=True)
class Context:
    params: Params
    repository: Path
    cache: Path
    server: str  # gRPC host:port of the live server
    header: tuple[str, str] | None
    prometheus: Prometheus
    experiment: str = "cifar10-release"

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
    """Run a release of ``version`` to its end (or resume the one in progress); returns the outcome."""
    form = ctx.form
    name = ctx.params.registry.registered_name(form)
    candidate_name = ctx.params.registry.registered_name(precision or form)
    record = release_record.read(name)
    if record is not None and record.active:
        if (record.candidate_name, record.candidate_version) != (candidate_name, version):
            raise ReleaseBusy(
                f"a release of {record.candidate_name} v{record.candidate_version} is at step "
                f"{record.label}; `cifar10-release abort` first"
            )
        owner = record.owner
        if owner is not None and owner.alive(ctx.params.release.owner_timeout_s):
            raise ReleaseBusy(f"the release is driven by pid {owner.pid} on {owner.host}")
        log.info("resuming the release of %s v%d at step %s", name, version, record.label)
        return drive(ctx, record)
    return drive(ctx, open_release(ctx, name, candidate_name, version, force_reason))


def open_release(
    ctx: Context, name: str, candidate_name: str, version: int, force_reason: str | None
) -> ReleaseRecord:
    """The gate: parity, accuracy (MLflow model validation), and an answer from the live server.

    ``name`` is the registered model the ensemble routes to (production's); the candidate may be a
    version of another form (``candidate_name``), judged against that same production.
    """
    cfg = ctx.params.release
    production = aliases.resolve(name, "production")
    candidate = aliases.resolve(candidate_name, version=version)
    if (candidate_name, candidate.version) == (name, production.version):
        raise ReleaseBusy(f"{name} v{version} already is production")
    checks = list(gate.offline(candidate, production, cfg))
    for check in checks:
        log.info("gate %s: %s (%s)", check.name, "passed" if check.passed else "FAILED", check.detail)
    if not checks[0].passed:  # the registry never serves such a version, --force or not
        raise ReleaseFailed(f"gate refused {name} v{version}: parity: {checks[0].detail}")
    now = time.time()
    run_id = tracking.open_run(ctx, candidate_name, version, name, production.version, force_reason)
    record = ReleaseRecord(
        candidate_name=candidate_name,
        candidate_version=version,
        production_name=name,
        production_version=production.version,
        step="gate",
        started_at=now,
        step_started_at=now,
        run_id=run_id,
        forced_reason=force_reason or "",
    )
    if not checks[1].passed and not force_reason:  # refused before the server sees the candidate
        _refuse(ctx, record, checks)
    record = release_record.write(record.moved("gate", {"by": "start"}))
    aliases.promote(candidate_name, "staging", version)
    from registry import tags
    from serving.rollout.apply import ApplyError

    loaded = True
    try:
        ctx.sync()  # loads the candidate beside production; nothing routes to it yet
    except ApplyError as exc:  # apply restored the previous repository: production serves as before
        loaded = False
        live = gate.Check("live", False, f"{candidate_name} v{version} did not load: {exc}")
    if loaded:
        model_tags = store.registered_model(store.client(), candidate_name).tags
        live = gate.answers(
            ctx.server,
            triton_model(ctx, candidate_name),
            version,
            tags.tensor_name(model_tags, "input", "input", candidate_name),
            tags.tensor_name(model_tags, "output", "logits", candidate_name),
        )
    checks.append(live)
    log.info("gate %s: %s (%s)", live.name, "passed" if live.passed else "FAILED", live.detail)
    if not live.passed and (not force_reason or not loaded):  # what does not load cannot be forced
        end(ctx, record, "refused", {"failed": [f"{c.name}: {c.detail}" for c in checks if not c.passed]})
        _refuse(ctx, record, checks)
    failing = [c for c in checks if not c.passed]
    tracking.log_step(
        ctx, record, "gate", {}, {c.name: c.detail for c in checks}, "forced" if failing else "passed"
    )
    if failing:
        log.warning("gate overridden with --force (%s): %s", force_reason, "; ".join(c.name for c in failing))
    return record


def _refuse(ctx: Context, record: ReleaseRecord, checks: list[gate.Check]) -> None:
    failing = [c for c in checks if not c.passed]
    tracking.log_step(ctx, record, "gate", {}, {c.name: c.detail for c in checks}, "refused")
    if record.step == "gate" and not record.log:  # end() closed the run when the server was involved
        tracking.close_run(ctx, record, "refused")
    raise ReleaseFailed(
        f"gate refused {record.candidate_name} v{record.candidate_version}: "
        + "; ".join(f"{c.name}: {c.detail}" for c in failing)
    )


def drive(ctx: Context, record: ReleaseRecord) -> dict:
    """From the record's step to production, judging each step; a breach rolls back and raises."""
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
        record = release_record.write(dataclasses.replace(record, owner=release_record.Owner.me()))
        ctx.sync()
        log.info("step %s: serving; judged over %s", record.label, _window(ctx, step))
        verdict, baseline_p99, outcome = watch(ctx, record, baseline_p99)
        tracking.log_step(ctx, record, record.label, verdict.metrics(), {}, outcome)
        if outcome != "passed":
            breached = time.time()
            end(ctx, record, "rolled_back", {"breach": [f.row() for f in verdict.breaches], "why": outcome})
            seconds = time.time() - breached
            raise ReleaseFailed(
                f"step {record.label}: {outcome} -> rolled back; production {record.production_name} "
                f"v{record.production_version} serves alone again ({seconds:.1f} s after the verdict): "
                + _figures(verdict)
            )
    aliases.promote(record.candidate_name, "production", record.candidate_version)
    if record.candidate_name != record.production_name:
        _route_to_candidate_form(ctx, record)
    end(ctx, record, "promoted", {})
    return {"promoted": f"{record.candidate_name} v{record.candidate_version}", "run_id": record.run_id}


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


def watch(
    ctx: Context, record: ReleaseRecord, baseline_p99: float | None
) -> tuple[Verdict, float | None, str]:
    """Judge the step every ``check_interval_s`` until it passes, breaches or stays inconclusive too long."""
    cfg = ctx.params.release
    window = _window(ctx, record.step)
    passes_at, gives_up_at = record.step_started_at + window, record.step_started_at + 3 * window
    step = Step(
        candidate=(triton_model(ctx, record.candidate_name), record.candidate_version),
        production=(triton_model(ctx, record.production_name), record.production_version),
        shadow=record.step == "shadow",
        started_at=record.step_started_at,
        release_started_at=record.started_at,
        min_agreement=min_agreement(record, cfg),
    )
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
    mine = record.owner and (record.owner.host, record.owner.pid)
    theirs = current and current.owner and (current.owner.host, current.owner.pid)
    if current is None or not current.active or theirs != mine:
        raise ReleaseFailed(
            f"the release was ended or taken over elsewhere (now: {current.label if current else 'none'})"
        )


def min_agreement(record: ReleaseRecord, cfg) -> float | None:
    """``release.min_agreement`` if set, else ``a + b - 1 - agreement_slack`` from both versions'
    tagged test accuracies (see :mod:`release.judge`); ``None`` when an accuracy is unknown."""
    from registry import tags

    if cfg.min_agreement is not None:
        return cfg.min_agreement
    slack = cfg.agreement_slack
    prod = tags.accuracy(aliases.resolve(record.production_name, version=record.production_version).tags)
    cand = tags.accuracy(aliases.resolve(record.candidate_name, version=record.candidate_version).tags)
    if prod is None or cand is None:
        return None
    return max(0.0, prod[0] + cand[0] - 1.0 - slack)


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
    record = end(ctx, record, "aborted", {"reason": reason})
    return {
        "aborted": f"{record.candidate_name} v{record.candidate_version}",
        "production": record.production_version,
    }
