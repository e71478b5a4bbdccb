"""``sync``: the registry's aliases -> the Triton model repository (and, optionally, a live server).

What serves is decided here and only here: for every form in ``registry.serve`` the version the
``production`` alias names plus the ``staging`` version if one is set. Nothing is guessed: a form
without a ``production`` alias, or any registry failure, stops the sync before it writes anything.
Artifacts are downloaded from MLflow into a local cache and checked against the SHA-256 recorded at
registration, so a corrupted download never reaches Triton; registry tags are validated before they
name a file (:mod:`registry.tags`, :mod:`registry.version_fetch`).

Each classifier's ``config.pbtxt`` is built from its versions' MLflow Models (tensor names, classes,
mean, std, batch limit: :mod:`mlmodel.facts`), which the tags repeating them must match; a version
registered before versions were MLflow Models is described by its tags, as then.

The classifier's batch limit comes from the versions themselves (``max_batch``, recorded at export
from ``export.max_batch``), so ``config.pbtxt`` never promises Triton more than the artifact takes;
a serving setting above it (a preferred batch size) is refused with both values named.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from common.exit_codes import UsageError
from common.params import ALL_PRECISIONS, Params
from mlmodel.facts import ModelError
from registry import aliases, plan_compat, release_record, serving_choice, store, tags
from registry.release_record import ReleaseRecord
from registry.serving_choice import ServingChoice
from registry.sync_result import DesiredState, ReleaseShown, ServedForm, SyncResult, SyncSummary, TargetShown
from registry.version_fetch import Fetched, fetch_model
from serving.repository.spec import Release, RepositorySpec, ServedModel, ServedVersion

if TYPE_CHECKING:
    from serving.repository.targets import Repository

log = logging.getLogger(__name__)


class ServingSettingError(UsageError):
    """``params.yaml``'s serving section asks for more than a served artifact supports (exit code 2)."""


def max_batch(name: str, info: aliases.Resolved, fmt: str, params: Params) -> int:
    """The batch limit a version's artifact supports: its ``max_batch`` tag, recorded at export.

    A version registered before that tag existed: an ONNX file (dynamic batch) takes
    ``export.max_batch``; a TensorRT plan's profile is unknown, so it is refused.
    """
    value = info.tags.get("max_batch")
    if value is not None:
        if not value.isdigit() or int(value) < 1:
            raise tags.TagError(f"{name} v{info.version}: tag max_batch={value!r} is not a positive integer")
        return int(value)
    if fmt == "tensorrt_plan":
        raise tags.TagError(
            f"{name} v{info.version}: a TensorRT plan without a max_batch tag; re-register it"
        )
    log.warning(
        "%s v%s has no max_batch tag; using export.max_batch (%d)",
        name,
        info.version,
        params.export.max_batch,
    )
    return params.export.max_batch


def _classifier(
    params: Params,
    precision: str,
    cache: Path,
    choice: ServingChoice | None = None,
    candidate: int | None = None,
    host: plan_compat.HostFacts | None = None,
) -> tuple[ServedModel, ServedForm, dict[str, str]]:
    """One served form; ``choice`` (the optimize record for this form) overrides its batching.

    ``candidate`` is a release's candidate version of this form, served beside the others.
    """
    cfg, serving = params.registry, params.serving
    name = cfg.registered_name(precision)
    if candidate is not None and aliases.alias_version(name, "production") is None:
        production = aliases.resolve(name, version=candidate)  # a form on trial, never served before
    else:
        production = aliases.resolve(name, "production")
    staging = aliases.alias_version(name, "staging")
    numbers = sorted({production.version} | ({staging} if staging else set()) | ({candidate} - {None}))
    resolved = {
        v: production if v == production.version else aliases.resolve(name, version=v) for v in numbers
    }
    fetched = {v: fetch_model(name, v, cache) for v in numbers}
    versions = tuple(ServedVersion(v, f.artifact, f.quality_reference) for v, f in fetched.items())
    fmt = tags.artifact_format(production.tags, name, production.version)
    if fmt == "tensorrt_plan":  # before any file is written: a plan runs only where it was built
        host = host or plan_compat.host_facts()
        for v, info in resolved.items():
            plan_compat.check_plan(name, v, info.tags, host)
    limit = min(
        fetched[v].facts.max_batch if fetched[v].facts else max_batch(name, info, fmt, params)
        for v, info in resolved.items()
    )
    preferred, delay, instances = (
        serving.preferred_batch_sizes,
        serving.max_queue_delay_us,
        serving.instance_count,
    )
    if choice is not None:
        preferred, delay, instances = (
            choice.preferred_batch_sizes,
            choice.max_queue_delay_us,
            choice.instance_count,
        )
    too_big = [b for b in preferred if b > limit]
    if too_big:
        raise ServingSettingError(
            f"preferred batch sizes {list(preferred)} exceed what {name} "
            f"v{numbers} supports: max_batch {limit} (export.max_batch when it was exported)"
        )
    model_tags = dict(store.registered_model(store.client(), name).tags)
    interface = served_interface(name, fetched, model_tags)
    model = ServedModel(
        name=cfg.triton_name(precision),
        backend="tensorrt" if fmt == "tensorrt_plan" else "onnxruntime",
        versions=versions,
        production=production.version,
        input_name=interface["input"],
        output_name=interface["output"],
        max_batch_size=limit,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=delay,
        instance_count=instances,
        kind=serving.kind,
    )
    summary = ServedForm(
        triton_model=model.name, production=production.version, staging=staging, max_batch=limit
    )
    return model, summary, interface


def served_interface(name: str, fetched: dict[int, Fetched], model_tags: dict[str, str]) -> dict[str, str]:
    """Tensor names, classes, mean and std of a served model: its versions' MLflow Models say them.

    Versions registered before they were MLflow Models fall back on the registered model's tags. All
    served versions of one Triton model share one config.pbtxt, so they must agree; a difference is
    refused, both values named.
    """
    stated = {
        v: {
            "input": f.facts.input.name,
            "output": f.facts.output.name,
            "classes": json.dumps(list(f.facts.classes)),
            "mean": json.dumps(list(f.facts.mean)),
            "std": json.dumps(list(f.facts.std)),
        }
        for v, f in fetched.items()
        if f.facts is not None
    }
    tagged = {  # validated whether or not a model states them: tags are untrusted input
        "input": tags.tensor_name(model_tags, "input", "input", name),
        "output": tags.tensor_name(model_tags, "output", "logits", name),
        "classes": json.dumps(list(tags.json_list(model_tags, "classes", name))),
        "mean": json.dumps(list(tags.json_list(model_tags, "mean", name, float))),
        "std": json.dumps(list(tags.json_list(model_tags, "std", name, float))),
    }
    if not stated:
        return tagged
    first, *others = sorted(stated)
    for v in others:
        for key, value in stated[v].items():
            if value != stated[first][key]:
                raise ModelError(f"{name}: v{first} has {key} {stated[first][key]} but v{v} has {value}")
    for key, value in stated[first].items():
        if key in model_tags and tagged[key] != value:
            raise ModelError(f"{name}: model tag {key}={tagged[key]} but v{first}'s MLflow Model: {value}")
    return stated[first]


def desired_spec(
    params: Params, cache: Path, honour_choice: bool = True, host: plan_compat.HostFacts | None = None
) -> DesiredState:
    """The repository spec the registry's aliases call for, and a summary of what was resolved.

    Strict: a form without a ``production`` alias, a registry failure or a malformed tag raises
    before anything is written, so the repository and the server stay exactly as they were.
    A standing ``cifar10 optimize`` choice (:mod:`registry.serving_choice`) names the ensemble's
    target and that form's batching, and adds the form to those served; ``honour_choice=False`` is
    for the optimizer itself, which sets both per candidate.
    """
    cfg, serving = params.registry, params.serving
    choice = serving_choice.read(cfg, ALL_PRECISIONS) if honour_choice else None
    target = choice.precision if choice is not None else cfg.ensemble_target
    record = _release(params, target) if honour_choice else None
    extra = [choice.precision] if choice else []
    candidate_form = _form(params, record.candidate_name) if record else None
    forms = list(dict.fromkeys([*cfg.serve, *extra, *([candidate_form] if candidate_form else [])]))
    models, forms_shown, meta = [], {}, {}
    for precision in forms:
        mine = choice if choice is not None and choice.precision == precision else None
        trial = record.candidate_version if record and precision == candidate_form else None
        model, forms_shown[cfg.registered_name(precision)], interface = _classifier(
            params, precision, cache, mine, trial, host
        )
        models.append(model)
        meta = meta or interface
    release = None
    if record is not None and record.step in ("shadow", "canary"):
        release = Release(
            candidate_model=cfg.triton_name(candidate_form),
            candidate_version=record.candidate_version,
            shadow_fraction=record.shadow_fraction,
            canary_weight=record.canary_weight,
        )
    summary = SyncSummary(
        forms=forms_shown,
        release=ReleaseShown(
            candidate=f"{record.candidate_name} v{record.candidate_version}", step=record.label
        )
        if record is not None
        else None,
        ensemble_target=TargetShown(
            form=target,
            decided_by=f"{choice.decided_by} ({choice.chosen_at})"
            if choice
            else "params.yaml registry.ensemble_target",
        ),
    )
    spec = RepositorySpec(
        classifiers=tuple(models),
        ensemble_target=cfg.triton_name(target),
        classes=tags.json_list(meta, "classes", "registered model"),
        mean=tags.json_list(meta, "mean", "registered model", float),
        std=tags.json_list(meta, "std", "registered model", float),
        max_image_bytes=serving.max_image_bytes,
        max_image_pixels=serving.max_image_pixels,
        preprocess_max_batch=serving.preprocess_max_batch,
        postprocess_max_batch=serving.postprocess_max_batch,
        python_queue_delay_us=serving.python_queue_delay_us,
        release=release,
        warmup=serving.warmup,
        warmup_max_batch=serving.warmup_max_batch,
        gpu=serving.gpu if serving.kind == "KIND_GPU" else None,
    )
    spec.validate()
    return DesiredState(spec, summary)


def _form(params: Params, registered_name: str) -> str:
    for precision in ALL_PRECISIONS:
        if params.registry.registered_name(precision) == registered_name:
            return precision
    raise tags.TagError(f"release record names {registered_name!r}, which is no form of this registry")


def _release(params: Params, target: str) -> ReleaseRecord | None:
    """The active release on the ensemble's form, if it still starts from what production names."""
    name = params.registry.registered_name(target)
    record = release_record.active(name)
    if record is None:
        return None
    production = aliases.alias_version(name, "production")
    if record.production_name != name or record.production_version != production:
        log.warning(
            "the release of %s v%d started from %s v%d, but %s's production is v%s: not served",
            record.candidate_name,
            record.candidate_version,
            record.production_name,
            record.production_version,
            name,
            production,
        )
        return None
    return record


def sync_for(
    params: Params,
    repository: Path | str,
    cache: Path,
    server: str | None = None,
    admin_token_file: Path | None = None,
    kind: str | None = None,
    tensorrt_version: str | None = None,
    gpu_arch: str | None = None,
    prune: bool = False,
    fleet: bool = False,
) -> SyncResult:
    """:func:`sync` as a command asks for it: a serving kind override, the admin token, the host's facts."""
    from serving.server.environment import admin_header

    if kind:
        params = params.replace(serving=params.serving.replace(kind=kind))
    header = admin_header(admin_token_file)
    if (server or fleet) and header is None:
        raise ValueError(
            "rolling a live server needs its admin token (--admin-token-file or $CIFAR10_ADMIN_TOKEN)"
        )
    host = None
    if tensorrt_version or gpu_arch:
        host = plan_compat.host_facts(tensorrt=tensorrt_version, compute_capability=gpu_arch)
    return sync(params, repository, cache, server, header, host, prune=prune, fleet=fleet)


def sync(
    params: Params,
    repository: Path | str | Repository,
    cache: Path,
    server_url: str | None = None,
    header: tuple[str, str] | None = None,
    host: plan_compat.HostFacts | None = None,
    lock_timeout_s: float = 0.0,
    prune: bool = False,
    fleet: bool = False,
) -> SyncResult:
    """Write ``repository`` from the registry; with ``server_url``, roll the live server over too.

    ``fleet``: roll every replica of ``params.fleet`` instead, one at a time, each drained first in
    the balancer (``fleet.balancer_admin``); a change reaches every replica or, undone, none.

    ``repository``: a folder, or ``s3://host:port/bucket/prefix`` (built in a mirror under ``cache``
    and published in a safe order: :mod:`serving.repository.s3_repository`).

    ``lock_timeout_s``: how long to wait for another rollout of ``repository`` before raising
    :class:`~serving.repository.atomic_fs.RepositoryBusy` (exit code 9).

    ``prune``: without a server, also delete from S3 the files no config names any more (a rollout
    always does, once its server moved off them; a folder never keeps any).

    ``host`` (TensorRT version, GPU architecture) judges TensorRT plans; by default it is read from
    the image ``compose.yaml`` pins and ``nvidia-smi`` when a plan is served.
    """
    from serving.fleet.haproxy import balancer
    from serving.fleet.replicas import rollout_targets
    from serving.repository.targets import open_repository
    from serving.rollout.apply import apply

    servers = rollout_targets(params.fleet, server_url, fleet)
    target = open_repository(repository, cache)
    target.check()  # S3 unreachable or refusing: one line now, before any artifact is downloaded
    desired = desired_spec(params, cache, host=host)
    if servers:
        deployed = target.deployed_spec()
        # the balancer drains replicas of the fleet; the one server --server names is none of its servers
        phases = apply(
            servers, deployed, desired.spec, header, target,
            balancer=balancer(params.fleet.balancer_admin if fleet else "", params.fleet.drain_timeout_s),
            lock_timeout_s=lock_timeout_s,
        )  # fmt: skip
        names = [r.name for r in servers]
        return SyncResult(models=desired.summary, changed=bool(phases), phases=phases, servers=names)
    with target.lock(timeout_s=lock_timeout_s or None):
        return SyncResult(models=desired.summary, changed=target.write(desired.spec, prune=prune))
