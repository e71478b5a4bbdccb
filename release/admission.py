"""Opening a release: the gate's checks, the live limits they fix, and a refusal that is recorded."""

from __future__ import annotations

import dataclasses
import logging

from registry import aliases, release_record, store
from registry.release_record import ReleaseRecord
from release import gate, limits, tracking
from release.context import Context, ReleaseFailed, check_still_mine, triton_model
from release.moves import end

log = logging.getLogger("release.controller")


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
    if not record.run_id:
        run_id = tracking.open_run(ctx, candidate_name, version, name, production.version, force_reason)
        record = release_record.write(dataclasses.replace(record, run_id=run_id))
    check_still_mine(record)  # a rival whose slow claim landed last owns it now: stop before scoring
    c = store.client()
    production_classes = version_classes(c, name, production)
    result = gate.offline(
        candidate,
        production,
        cfg,
        version_classes(c, candidate_name, candidate),
        production_classes,
        ProductionScorer(name, production.version, ctx.prepared, ctx.cache),
    )
    for check in result.checks:
        log.info("gate %s: %s (%s)", check.name, "passed" if check.passed else "FAILED", check.detail)
    derived = limits.derive(result.baseline or own_figures(production), production_classes, cfg)
    record = release_record.write(dataclasses.replace(record, limits=derived.to_dict()))
    if result.unforceable or (result.failing and not force_reason):  # before the server sees it
        _refuse(ctx, record, result, served=False)
    check_still_mine(record)
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


def version_classes(c, name: str, version: aliases.Resolved) -> tuple[str, ...]:
    from registry import tags

    return tags.version_classes(version.tags, dict(store.registered_model(c, name).tags), name)


def own_figures(production: aliases.Resolved) -> limits.Baseline | None:
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
    detail = {"failed": failed, "gate": result.to_record()}
    if served:
        end(ctx, record, "refused", detail)
    else:  # nothing was staged or served: the record and the run end here
        record = release_record.write(record.moved("refused", detail))
        tracking.close_run(ctx, record, "refused")
    forced = " (cannot be forced)" if result.unforceable else ""
    raise ReleaseFailed(
        f"gate refused {record.candidate_name} v{record.candidate_version}{forced}: " + "; ".join(failed)
    )


def shadow_probe(ctx: Context, record: ReleaseRecord):
    """The labelled probe's figure for the shadow step (:mod:`release.probe`), or ``None`` without data."""
    from tritonclient.utils import InferenceServerException

    from common import scored_split
    from registry import tags
    from release import probe
    from release.figures import Figure

    cfg = ctx.params.release
    if cfg.probe_images <= 0:
        return None
    c = store.client()
    production = aliases.resolve(record.production_name, version=record.production_version)
    rows = probe.probe_rows(
        ctx.prepared, version_classes(c, record.production_name, production), cfg.probe_images
    )
    if isinstance(rows, str):
        log.warning("no labelled probe: %s", rows)
        return None
    targets = []
    for name, version in (
        (record.production_name, record.production_version),
        (record.candidate_name, record.candidate_version),
    ):
        model_tags = dict(store.registered_model(c, name).tags)
        version_tags = aliases.resolve(name, version=version).tags
        targets.append(
            probe.Target(
                triton_model(ctx, name),
                version,
                tags.tensor_name(model_tags, "input", "input", name),
                tags.tensor_name(model_tags, "output", "logits", name),
                int(version_tags.get("max_batch", "32") or 32),
            )
        )
    model_tags = dict(store.registered_model(c, record.production_name).tags)
    mean = tags.json_list(model_tags, "mean", record.production_name, float)
    std = tags.json_list(model_tags, "std", record.production_name, float)
    try:
        images, labels = rows
        x = scored_split.normalise(images, mean, std)
        right_p = probe.answers(ctx.server, targets[0], x) == labels
    except (InferenceServerException, OSError, ValueError) as exc:
        log.warning("labelled probe: production did not answer (%s); no probe this step", exc)
        return None
    try:
        right_c = probe.answers(ctx.server, targets[1], x) == labels
    except InferenceServerException as exc:
        detail = f"the candidate failed a probe request: {exc.message()}"
        return Figure("probe_accuracy_difference", None, -cfg.accuracy_margin, True, False, detail)
    result = probe.compare(right_p, right_c, cfg.confidence_z)
    return result.figure(cfg.accuracy_margin)
