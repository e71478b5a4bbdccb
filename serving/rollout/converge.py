"""Bring one server to a repository state: load what it does not serve as the spec says, then check.

The server, not the repository, says what is stale: each model's READY versions and the generation
its loaded config carries (:mod:`serving.repository.generation`). So a rerun after a rollout killed
between writing and loading finishes the job, and each replica of a fleet is brought to the state
the shared repository holds whatever it served before.
"""

from __future__ import annotations

import logging
import time

from serving.repository.spec import POSTPROCESS, PREPROCESS, ROUTER, RepositorySpec
from serving.rollout.admin import AdminError, ModelAdmin
from serving.rollout.plan import model_names

TRANSIENT = ("LOADING", "UNLOADING")
SETTLE_WAIT_S = 30.0
log = logging.getLogger(__name__)


class ApplyError(RuntimeError):
    """A rollout step failed; the message says which step, which replica and what Triton reported."""


def wanted(spec: RepositorySpec) -> dict[str, set[int]]:
    """Model -> the versions ``spec`` serves."""
    classifiers = {m.name: set(m.version_numbers) for m in spec.classifiers}
    router = {ROUTER: {1}} if spec.release is not None else {}
    return classifiers | {PREPROCESS: {1}, POSTPROCESS: {1}, **router, spec.ensemble_name: {1}}


def ready(states: dict[tuple[str, int], tuple[str, str]], name: str) -> set[int]:
    return {v for (n, v), (state, _) in states.items() if n == name and state == "READY"}


def stale(triton: ModelAdmin, spec: RepositorySpec, generations: dict[str, str]) -> list[str]:
    """Models, in load order, whose READY versions or loaded generation differ from ``spec``'s.

    ``generations``: :func:`~serving.repository.build.model_generations` of ``spec``, worked out once
    per phase by the caller (it lays out the whole repository), not once per replica.
    """
    states, want = triton.states(), wanted(spec)
    return [
        name
        for name in model_names(spec)
        if ready(states, name) != want[name] or triton.generation(name) != generations[name]
    ]


def settled(triton: ModelAdmin, want: dict[str, set[int]]) -> dict[tuple[str, int], tuple[str, str]]:
    """The states once no wanted version is mid-transition.

    A load returns once the new version is READY, but a version retired a moment earlier and loaded
    again can still be listed UNLOADING (its old instance drains its requests) for a little while.
    """
    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
        states = triton.states()
        moving = [
            (name, v)
            for name, versions in want.items()
            for v in versions - ready(states, name)
            if states.get((name, v), ("",))[0] in TRANSIENT
        ]
        if not moving or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def converge(
    triton: ModelAdmin,
    spec: RepositorySpec,
    todo: list[str],
    generations: dict[str, str],
    wait_quiet: bool = True,
) -> None:
    """Load ``todo`` (what :func:`stale` found) in order, then check the server serves ``spec``
    (its models at ``generations``, as :func:`stale` takes them).

    ``wait_quiet``: also wait until the server is :func:`quiet` (a replica of a fleet, whose balancer
    health-checks it before the next replica is drained); a lone server's clients never look.

    Raises:
        ApplyError: a version is not READY (with Triton's reason), or a model loaded and still runs
            the previous config (the server did not see the new files).
        AdminError: Triton refused a load.
    """
    was_ready = wait_quiet and triton.ready()
    for name in todo:  # dependency order: classifiers, python models, ensemble
        triton.load(name)
    states = settled(triton, wanted(spec))
    bad = {name: versions - ready(states, name) for name, versions in wanted(spec).items()}
    bad = {name: missing for name, missing in bad.items() if missing}
    if bad:
        detail = "; ".join(
            f"{name}:{v} is {states.get((name, v), ('NOT LOADED', ''))[0]}"
            f"{f' ({r})' if (r := states.get((name, v), ('', ''))[1]) else ''}"
            for name, missing in sorted(bad.items())
            for v in sorted(missing)
        )
        raise ApplyError(f"not every model is READY: {detail}")
    behind = [name for name in todo if triton.generation(name) != generations[name]]
    if behind:
        raise ApplyError(f"loaded but still serving the previous config: {', '.join(behind)}")
    if wait_quiet:
        quiet(triton, was_ready)


def quiet(triton: ModelAdmin, ready_again: bool = True) -> None:
    """Wait (bounded) until no version at all is LOADING or UNLOADING, and the server is ready again.

    A reload swaps the new instance in and unloads the old one in the background, and until that
    is done Triton's strict readiness (``/v2/health/ready``) fails: a balancer's health check would
    take the replica out just when the next replica is drained. So a replica counts as done only
    once it is quiet. A server that was not ready before the change (a version that failed to load
    earlier keeps strict readiness down) is not waited for to become ready.
    """
    deadline = time.monotonic() + SETTLE_WAIT_S
    while True:
        moving = [m for m in triton.index() if m.get("state") in TRANSIENT]  # old instances too
        if not moving and (not ready_again or triton.ready()):
            return
        if time.monotonic() > deadline:
            log.warning("not quiet after %.0f s: %s", SETTLE_WAIT_S, moving or "not ready")
            return
        time.sleep(0.1)


def unload(triton: ModelAdmin, names: list[str]) -> None:
    """Unload whole models (a dropped classifier, a renamed ensemble)."""
    for name in names:
        try:
            triton.unload(name)
        except AdminError as exc:
            raise ApplyError(f"retire: {exc}") from exc
