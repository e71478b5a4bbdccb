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

Each phase loads only the models the server does not serve as the spec says (their READY versions
or the generation of their loaded config, :mod:`serving.rollout.converge`), so rerunning an
interrupted rollout completes it. Triton reloads whatever else an ensemble load polls, in the
background as well. Model control goes over gRPC (see :mod:`serving.rollout.admin`).

**A fleet** (several replicas on one shared repository, :mod:`serving.fleet`): each phase writes the
repository once and then brings each replica to it in turn, each taken out of the balancer first
(drained) and put back once it serves the phase, so the public endpoint always has ready replicas
and every replica holds both versions before any routes to the new one. A replica that fails
undoes the change on every replica (back through the phases already reached), and the error names it.
A replica that cannot be managed when the change starts refuses it before anything is written.

Not covered by the guarantee: a change of the ensemble's interface (class list, input type, ensemble
name) can fail requests that straddle the switch; :func:`apply` logs a warning for such a rollout.
Between the postprocess reload and the ensemble reload in step 2 (milliseconds), a few predictions
from the old version may be counted under the new version's metric label.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from serving.fleet.haproxy import BalancerError, Haproxy, NoBalancer
from serving.fleet.replicas import Replica, single
from serving.repository.build import model_generations
from serving.repository.spec import RepositorySpec
from serving.repository.targets import Repository, open_repository
from serving.rollout import converge
from serving.rollout.admin import AdminError, ModelAdmin
from serving.rollout.converge import ApplyError
from serving.rollout.plan import model_names, rollout_plan

__all__ = ["ApplyError", "apply", "model_names", "rollout_plan"]

log = logging.getLogger(__name__)
REACH_TIMEOUT_S = 10.0  # how long a replica may take to answer before a change is refused


def apply(
    servers: str | Sequence[Replica],
    old_spec: RepositorySpec | None,
    new_spec: RepositorySpec,
    header: tuple[str, str] | None,
    repository: Path | Repository,
    *,
    balancer: Haproxy | NoBalancer | None = None,
    settle_s: float = 1.0,
    timeout_s: float = 600.0,
    lock_timeout_s: float = 0.0,
) -> list[str]:
    """Move every server reading ``repository`` from ``old_spec`` to ``new_spec``.

    Args:
        servers: one server's gRPC endpoint, ``host:port`` (a ``grpc://`` prefix is accepted), or the
            replicas of a fleet (:func:`serving.fleet.replicas.fleet_replicas`), changed in order.
        old_spec: what the servers serve now (``read_deployed_spec(repository)``), ``None`` if nothing.
        new_spec: the desired state.
        header: ``(key, value)`` given to the servers' ``restricted_header`` (sent as gRPC metadata
            ``triton-grpc-protocol-<key>``), or ``None`` when the API is not restricted.
        repository: what the servers were started with (``--model-repository``): a folder, or an
            :class:`~serving.repository.s3_repository.S3Repository`.
        balancer: where a replica is drained before its models reload (haproxy), or none.
        settle_s: pause before retiring versions, for requests still in flight on them.
        timeout_s: limit for each load/unload call.

    Returns:
        The phases that changed what a server serves, e.g. ``["stage", "switch", "retire"]``.

    Raises:
        RepositoryBusy: another build or rollout held the repository past ``lock_timeout_s`` (one
            rollout of a repository at a time; by default a second one fails at once).
        ApplyError: a replica cannot be managed (nothing was changed), or a load failed (in the stage
            and switch phases every replica is brought back to ``old_spec`` first).
        BalancerError: the balancer cannot be reached or does not list a replica (nothing was changed).
    """
    new_spec.validate()
    interface = (new_spec.classes, new_spec.ensemble_name, new_spec.interface)
    if old_spec is not None and (old_spec.classes, old_spec.ensemble_name, old_spec.interface) != interface:
        log.warning(
            "the ensemble's interface changes (classes/name/inputs): requests during the switch may fail"
        )
    replicas = [single(servers)] if isinstance(servers, str) else list(servers)
    repository = open_repository(repository)
    fleet = [(replica, ModelAdmin(replica.grpc, header, timeout_s)) for replica in replicas]
    try:
        with repository.lock(timeout_s=lock_timeout_s):
            if old_spec is not None:
                old_spec = _served_from(repository.local, old_spec)
            return _apply(fleet, balancer or NoBalancer(), old_spec, new_spec, repository, settle_s)
    finally:
        for _, triton in fleet:
            triton.close()


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


Fleet = list[tuple[Replica, ModelAdmin]]


def _check_reachable(fleet: Fleet, balancer: Haproxy | NoBalancer) -> None:
    """Before anything is written: a server we may not manage must not see its repository change."""
    problems = []
    for replica, triton in fleet:
        try:
            triton.states(timeout_s=REACH_TIMEOUT_S)
        except AdminError as exc:
            problems.append(f"{replica}: {exc}" if len(fleet) > 1 else str(exc))
    if problems:
        what = "the server's models" if len(fleet) == 1 else "every replica"
        raise ApplyError(f"cannot manage {what}, nothing was changed: {'; '.join(problems)}")
    balancer.check([replica.name for replica, _ in fleet])


def _apply(
    fleet: Fleet,
    balancer: Haproxy | NoBalancer,
    old_spec: RepositorySpec | None,
    new_spec: RepositorySpec,
    repository: Repository,
    settle_s: float,
) -> list[str]:
    _check_reachable(fleet, balancer)
    done: list[str] = []
    reached = [old_spec] if old_spec is not None else []  # the states every replica has served
    for phase, spec in rollout_plan(old_spec, new_spec):
        if phase == "retire" and settle_s > 0:
            time.sleep(settle_s)
        repository.write(spec, prune=False)
        generations = model_generations(spec)
        changed = False
        for replica, triton in fleet:
            where = phase if len(fleet) == 1 else f"{phase} on {replica}"
            try:
                if todo := converge.stale(triton, spec, generations):
                    with balancer.out(replica.name, functools.partial(_peers, fleet, replica)):
                        converge.converge(triton, spec, todo, generations, wait_quiet=len(fleet) > 1)
                    changed = True
            except (ApplyError, AdminError, BalancerError) as exc:
                if phase in ("stage", "switch") and old_spec is not None:
                    _undo(fleet, balancer, reversed(reached), repository)
                    raise ApplyError(f"{where}: {exc}; restored the previous repository") from exc
                raise ApplyError(f"{where}: {exc}") from exc
        repository.prune()  # files nothing names any more (in S3: a retired version), once all moved
        reached.append(spec)
        if changed:
            log.info("rollout phase %s applied on %d server(s)", phase, len(fleet))
            done.append(phase)
    gone = sorted(set(model_names(old_spec)) - set(model_names(new_spec))) if old_spec else []
    if gone:  # whole models (a dropped classifier, the router) leave last
        for replica, triton in fleet:  # an unload makes Triton reload the ensemble that used the model
            with balancer.out(replica.name, functools.partial(_peers, fleet, replica)):
                was_ready = triton.ready()
                converge.unload(triton, gone)
                converge.quiet(triton, was_ready)
        if "retire" not in done:
            done.append("retire")
    return done


def _undo(
    fleet: Fleet, balancer: Haproxy | NoBalancer, states: Iterable[RepositorySpec], repository: Repository
) -> None:
    """Bring every replica back through ``states`` (newest first), dropping versions that never got ready.

    Best effort on each replica: one that fails to return is logged and the others still return.
    """
    for spec in states:
        repository.write(spec, prune=False)
        generations = model_generations(spec)
        for replica, triton in fleet:
            try:
                if todo := converge.stale(triton, spec, generations):
                    with balancer.out(replica.name, functools.partial(_peers, fleet, replica)):
                        _load_all(triton, todo)
            except (AdminError, BalancerError) as exc:
                log.error("restoring %s: %s", replica, exc)
    try:
        repository.prune()  # the failed versions' files: no config names them any more
    except Exception as exc:  # the restore itself succeeded; leftovers go with the next publish
        log.error("removing the failed versions' files: %s", exc)


def _peers(fleet: Fleet, replica: Replica) -> str:
    """ "ready" if another replica is ready now (only then may ``replica`` leave the balancer),
    "starting" if one answers but is not ready yet, else "none"."""
    others = [triton for other, triton in fleet if other != replica]
    if any(triton.ready() for triton in others):
        return "ready"
    return "starting" if any(triton.live() for triton in others) else "none"


def _load_all(triton: ModelAdmin, names: list[str]) -> None:
    for name in names:
        try:
            triton.load(name)
        except AdminError as exc:  # keep going: the other models must return to the old state too
            log.error("restoring %s: %s", name, exc)
