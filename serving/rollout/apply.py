"""Roll a running Triton (explicit model control) from one :class:`RepositorySpec` to another.

Clients keep calling the ensemble throughout, and none of their requests may fail. The rollout
goes through three repository states, each written atomically and then loaded:

1. **stage** - every classifier serves the union of its old and new versions; the ensemble still
   routes to the old production version. Loading a classifier whose version list changed reloads
   its versions in the background (Triton 2.51 does so for any ``version_policy`` change) and swaps
   them in only once all loaded, so the old version answers until then. If a new version fails to
   load, Triton keeps the old versions serving, and we restore the old repository and stop here.
2. **switch** - same versions, but the ensemble (and the postprocess metric labels) point at the
   new production version, which is already READY. An ensemble reload is also a background load plus
   swap: requests are served either by the old ensemble (old version) or the new one (new version).
   Each ensemble request holds handles to the model versions of all its steps from the moment it
   starts (``EnsembleContext`` in Triton's core), so an old-ensemble request in flight still
   completes on the old version even after step 3.
3. **retire** - the new spec: versions and models no longer wanted are unloaded. Nothing routes to
   them any more; a short ``settle_s`` pause first lets in-flight requests finish regardless.

Each phase loads only the models whose folder content changed (plus any whose READY versions do not
match the spec, so rerunning an interrupted rollout completes it). Triton reloads whatever else an
ensemble load polls, in the background as well. Model control goes over gRPC
(see :mod:`serving.rollout.admin`).

Not covered by the guarantee: a change of the ensemble's interface (class list, input type, ensemble
name) can fail requests that straddle the switch; :func:`apply` logs a warning for such a rollout.
Between the postprocess reload and the ensemble reload in step 2 (milliseconds), a few predictions
from the old version may be counted under the new version's metric label.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from serving.repository.build import model_fingerprints
from serving.repository.spec import POSTPROCESS, PREPROCESS, ROUTER, RepositorySpec
from serving.repository.targets import Repository, open_repository
from serving.rollout.admin import AdminError, ModelAdmin
from serving.rollout.plan import model_names, rollout_plan

__all__ = ["ApplyError", "apply", "model_names", "rollout_plan"]

log = logging.getLogger(__name__)


class ApplyError(RuntimeError):
    """A rollout step failed; the message says which step and what Triton reported."""


def _wanted(spec: RepositorySpec) -> dict[str, set[int]]:
    wanted = {m.name: set(m.version_numbers) for m in spec.classifiers}
    router = {ROUTER: {1}} if spec.release is not None else {}
    return wanted | {PREPROCESS: {1}, POSTPROCESS: {1}, **router, spec.ensemble_name: {1}}


def _ready(states: dict[tuple[str, int], tuple[str, str]], name: str) -> set[int]:
    return {v for (n, v), (state, _) in states.items() if n == name and state == "READY"}


TRANSIENT = ("LOADING", "UNLOADING")
SETTLE_WAIT_S = 30.0


def _settled(triton: ModelAdmin, wanted: dict[str, set[int]]) -> dict[tuple[str, int], tuple[str, str]]:
    """The states once no wanted version is mid-transition.

    A load returns once the new version is READY, but a version retired a moment earlier and loaded
    again can still be listed UNLOADING (its old instance drains its requests) for a little while.
    """
    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
        states = triton.states()
        moving = [
            (name, v)
            for name, versions in wanted.items()
            for v in versions - _ready(states, name)
            if states.get((name, v), ("",))[0] in TRANSIENT
        ]
        if not moving or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def _sync(
    triton: ModelAdmin, prev: RepositorySpec | None, spec: RepositorySpec, repository: Repository
) -> bool:
    """Write ``spec``, then load each model whose folder changed or whose READY versions are wrong.

    Returns whether anything was loaded. Files nothing names any more (in S3: a retired version) are
    deleted only once every model is READY on what the new spec names.

    Loading only what changed matters: after a swap every folder is new to Triton, so any model we
    load (or that an ensemble load polls) is reloaded, which is safe but slow for big classifiers.
    The READY check makes a rerun after an interrupted rollout finish the job.
    """
    states = triton.states()
    repository.write(spec, prune=False)
    before = model_fingerprints(prev) if prev is not None else {}
    after = model_fingerprints(spec)
    todo = [
        name
        for name, versions in _wanted(spec).items()
        if before.get(name) != after.get(name) or _ready(states, name) != versions
    ]
    for name in model_names(spec):  # dependency order: classifiers, python models, ensemble
        if name in todo:
            triton.load(name)
    states = _settled(triton, _wanted(spec))
    bad = {name: versions - _ready(states, name) for name, versions in _wanted(spec).items()}
    bad = {name: missing for name, missing in bad.items() if missing}
    if bad:
        detail = "; ".join(
            f"{name}:{v} is {states.get((name, v), ('NOT LOADED', ''))[0]}"
            f"{f' ({r})' if (r := states.get((name, v), ('', ''))[1]) else ''}"
            for name, missing in sorted(bad.items())
            for v in sorted(missing)
        )
        raise ApplyError(f"not every model is READY: {detail}")
    repository.prune()
    return bool(todo)


def apply(
    client_url: str,
    old_spec: RepositorySpec | None,
    new_spec: RepositorySpec,
    header: tuple[str, str] | None,
    repository: Path | Repository,
    *,
    settle_s: float = 1.0,
    timeout_s: float = 600.0,
    lock_timeout_s: float = 0.0,
) -> list[str]:
    """Move the server at ``client_url`` (gRPC) serving ``repository`` from ``old_spec`` to ``new_spec``.

    Args:
        client_url: the server's gRPC endpoint, ``host:port`` (a ``grpc://`` prefix is accepted).
        old_spec: what the server serves now (``read_deployed_spec(repository)``), ``None`` if nothing.
        new_spec: the desired state.
        header: ``(key, value)`` given to the server's ``restricted_header`` (sent as gRPC metadata
            ``triton-grpc-protocol-<key>``), or ``None`` when the API is not restricted.
        repository: what the server was started with (``--model-repository``): a folder, or an
            :class:`~serving.repository.s3_repository.S3Repository`.
        settle_s: pause before retiring versions, for requests still in flight on them.
        timeout_s: limit for each load/unload call.

    Returns:
        The phases that changed what the server serves, e.g. ``["stage", "switch", "retire"]``.

    Raises:
        RepositoryBusy: another build or rollout held the repository past ``lock_timeout_s`` (one
            rollout of a repository at a time; by default a second one fails at once).
        ApplyError: a load failed. In the stage phase the old repository is restored first, so the
            server keeps serving exactly ``old_spec``.
    """
    new_spec.validate()
    interface = (new_spec.classes, new_spec.ensemble_name, new_spec.interface)
    if old_spec is not None and (old_spec.classes, old_spec.ensemble_name, old_spec.interface) != interface:
        log.warning(
            "the ensemble's interface changes (classes/name/inputs): requests during the switch may fail"
        )
    repository = open_repository(repository)
    with repository.lock(timeout_s=lock_timeout_s):
        if old_spec is not None:
            old_spec = _served_from(repository.local, old_spec)
        return _apply(ModelAdmin(client_url, header, timeout_s), old_spec, new_spec, repository, settle_s)


def _served_from(repository: Path, spec: RepositorySpec) -> RepositorySpec:
    """``spec`` with each missing artifact replaced by its copy in the repository.

    The versions being served are already in the repository; reading them from there keeps a
    rollout working after the registry has pruned an old artifact.
    """
    models = []
    for model in spec.classifiers:
        versions = []
        for served in model.versions:
            copy = repository / model.name / str(served.version) / model.model_filename
            missing = not served.artifact.is_file() and copy.is_file()
            versions.append(dataclasses.replace(served, artifact=copy) if missing else served)
        models.append(dataclasses.replace(model, versions=tuple(versions)))
    return dataclasses.replace(spec, classifiers=tuple(models))


def _apply(
    triton: ModelAdmin,
    old_spec: RepositorySpec | None,
    new_spec: RepositorySpec,
    repository: Repository,
    settle_s: float,
) -> list[str]:
    done: list[str] = []
    prev = old_spec
    try:
        try:  # before anything is written: a server we may not manage must not see its repository change
            triton.states()
        except AdminError as exc:
            raise ApplyError(f"cannot manage the server's models: {exc}") from exc
        for phase, spec in rollout_plan(old_spec, new_spec):
            if phase == "retire" and settle_s > 0:
                time.sleep(settle_s)
            try:
                if _sync(triton, prev, spec, repository):
                    log.info("rollout phase %s applied", phase)
                    done.append(phase)
            except (ApplyError, AdminError) as exc:
                if phase == "stage" and old_spec is not None:
                    _restore(triton, spec, old_spec, repository)
                    raise ApplyError(f"stage: {exc}; restored the previous repository") from exc
                raise ApplyError(f"{phase}: {exc}") from exc
            prev = spec
        gone = sorted(set(model_names(old_spec)) - set(model_names(new_spec))) if old_spec else []
        for name in gone:  # whole models (a dropped classifier, a renamed ensemble) leave last
            try:
                triton.unload(name)
            except AdminError as exc:
                raise ApplyError(f"retire: {exc}") from exc
        if gone and "retire" not in done:
            done.append("retire")
    finally:
        triton.close()
    return done


def _restore(
    triton: ModelAdmin, failed: RepositorySpec, old_spec: RepositorySpec, repository: Repository
) -> None:
    """Put the old repository back and reload what differs, dropping versions that never got ready."""
    repository.write(old_spec, prune=False)
    before, after = model_fingerprints(failed), model_fingerprints(old_spec)
    for name in model_names(old_spec):
        if before.get(name) != after.get(name):
            try:
                triton.load(name)
            except AdminError as exc:  # keep going: the other models must return to the old state too
                log.error("restoring %s: %s", name, exc)
    try:
        repository.prune()  # the failed versions' files: no config names them any more
    except Exception as exc:  # the restore itself succeeded; leftovers go with the next publish
        log.error("removing the failed versions' files: %s", exc)
