"""The intermediate repository states of a zero-downtime rollout (pure functions, no server).

:func:`rollout_plan` turns ``old -> new`` into ``stage -> switch -> retire`` specs; see
:mod:`serving.rollout.apply` for why that order never fails a request.
"""

from __future__ import annotations

import dataclasses

from serving.repository.spec import POSTPROCESS, PREPROCESS, ROUTER, RepositorySpec, ServedModel


def _merge_model(old: ServedModel | None, new: ServedModel | None) -> ServedModel:
    """The new settings with the union of both version lists; production from ``old`` if it exists."""
    assert old is not None or new is not None
    base = new or old
    versions = {v.version: v for v in (old.versions if old else ())}
    versions.update({v.version: v for v in (new.versions if new else ())})
    production = old.production if old is not None else base.production
    return dataclasses.replace(
        base, versions=tuple(versions[k] for k in sorted(versions)), production=production
    )


def _union(old: RepositorySpec, new: RepositorySpec, routing: RepositorySpec) -> RepositorySpec:
    """All classifiers of both specs with the union of their versions, routed like ``routing``."""
    old_names = [m.name for m in old.classifiers]
    names = old_names + [m.name for m in new.classifiers if m.name not in old_names]
    merged = []
    for name in names:
        o = next((m for m in old.classifiers if m.name == name), None)
        n = next((m for m in new.classifiers if m.name == name), None)
        model = _merge_model(o, n)
        if name == routing.ensemble_target:
            model = dataclasses.replace(model, production=routing.target.production)
        merged.append(model)
    return dataclasses.replace(routing, classifiers=tuple(merged))


def rollout_plan(old: RepositorySpec | None, new: RepositorySpec) -> list[tuple[str, RepositorySpec]]:
    """The ``(phase, spec)`` states to go through, consecutive duplicates removed."""
    if old is None:
        return [("deploy", new)]
    plan = [("stage", _union(old, new, old)), ("switch", _union(old, new, new)), ("retire", new)]
    deduped: list[tuple[str, RepositorySpec]] = []
    for phase, spec in plan:
        if not deduped or deduped[-1][1] != spec:
            deduped.append((phase, spec))
    return deduped


def model_names(spec: RepositorySpec) -> list[str]:
    """Load order: composing models (the router after the classifiers it calls) before the ensemble."""
    router = [ROUTER] if spec.release is not None else []
    return [m.name for m in spec.classifiers] + [PREPROCESS, POSTPROCESS, *router, spec.ensemble_name]
