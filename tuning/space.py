"""The search space of ``params.yaml`` as Optuna draws it, and the way a drawn point goes back there.

A point is a mapping from a profile key (``train.lr``, ``model.width``) to a value. It becomes a
:class:`~common.params.Params` for a trial (:func:`apply`), and ``dvc exp run -S`` overrides of
``profiles.<profile>.<key>`` for training the best one fully (:func:`overrides`), so the tuned run
is an ordinary, reproducible DVC experiment of the pipeline, not a side channel.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from common.params import Params, SearchParam, TuneBudget


def suggest(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """Draw one point: float ranges (log-scaled where asked) and categorical choices."""
    point = {}
    for key, p in space.items():
        if p.choices is not None:
            point[key] = trial.suggest_categorical(key, list(p.choices))
        else:
            point[key] = trial.suggest_float(key, float(p.low), float(p.high), log=p.log)
    return point


def apply(params: Params, point: dict[str, Any]) -> Params:
    """``params`` with the point's settings in its active profile (unknown keys were refused at load)."""
    sections = {"model": {}, "train": {}}
    for key, value in point.items():
        section, _, name = key.partition(".")
        sections[section][name] = value
    return params.replace(
        model=params.model.replace(**sections["model"]), train=params.train.replace(**sections["train"])
    )


def baseline(params: Params, space: dict[str, SearchParam]) -> dict[str, Any] | None:
    """The profile's own settings as a point of the space, or ``None`` where one lies outside it.

    The study's first trial, so "the best trial" is always compared with what the profile would have
    done on the same budget, data and epochs, not with a figure from a different recipe.
    """
    point = {}
    for key, p in space.items():
        section, _, name = key.partition(".")
        value = getattr(getattr(params, section), name)
        inside = value in p.choices if p.choices is not None else p.low <= value <= p.high
        if not inside:
            return None
        point[key] = value
    return point


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def overrides(profile: str, point: dict[str, Any]) -> list[str]:
    """``dvc exp run -S`` arguments that put ``point`` into ``params.yaml``'s profile."""
    return [f"profiles.{profile}.{key}={_yaml_scalar(value)}" for key, value in sorted(point.items())]


def study_name(params: Params) -> str:
    """One study per profile and search: changing the space, budget or base settings starts a new one.

    Resuming a study whose trials were drawn for other settings would mix incomparable results.
    """
    budget: TuneBudget = params.tune.budget
    blob = json.dumps(
        {
            "budget": {
                k: v
                for k, v in budget.model_dump(mode="json").items()
                if k not in ("trials", "timeout_minutes")
            },
            "model": params.model.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
            "sampler_seed": params.tune.sampler_seed,
            "pruner": [params.tune.pruner, params.tune.startup_trials, params.tune.warmup_epochs],
            "data": params.data.val_per_class,
        },
        sort_keys=True,
        default=str,
    )
    return f"cifar10-{params.profile}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
