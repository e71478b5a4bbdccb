"""The one loader of ``params.yaml``: layers merged, one validation, errors that name the key.

A run's settings are four layers, each over the one before: the repository's ``params.yaml`` (every
default, :mod:`common.params_defaults`), the file a command was given (``--params``), ``CIFAR10_*``
environment variables, and ``--set section.key=value`` assignments. ``dvc exp run -S`` edits the
file itself. The merged document is validated once by the schema (:mod:`common.params_schema`), so
an override is checked exactly like the file, and :func:`resolve` keeps where each value came from
for ``cifar10 params show``. Stages receive the typed sections, never raw dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from common.params_defaults import DEFAULTS_FILE, PROFILE_ENV, SOURCE_ENV, default_document, env_overrides
from common.params_errors import ParamsError, raise_params_error
from common.params_schema import (
    ALL_PRECISIONS,
    KINDS,
    ONNX_PRECISIONS,
    DataConfig,
    EvaluateConfig,
    ExportConfig,
    GpuServingConfig,
    MlflowConfig,
    ModelConfig,
    MonitoringConfig,
    OptimizeConfig,
    Params,
    RegistryConfig,
    ReleaseConfig,
    SearchParam,
    ServingConfig,
    StoresConfig,
    Tolerance,
    TrainConfig,
    TuneBudget,
    TuneConfig,
)

__all__ = [
    "ALL_PRECISIONS", "KINDS", "ONNX_PRECISIONS", "PROFILE_ENV", "SOURCE_ENV", "DataConfig",
    "EvaluateConfig", "ExportConfig", "GpuServingConfig", "MlflowConfig", "ModelConfig",
    "MonitoringConfig", "OptimizeConfig", "Params", "ParamsError", "RegistryConfig", "ReleaseConfig",
    "Resolved",
    "SearchParam", "ServingConfig", "StoresConfig", "Tolerance", "TrainConfig", "TuneBudget", "TuneConfig",
    "load_params", "resolve", "with_overrides",
]  # fmt: skip

SECTIONS = ("profile", "profiles", "data", "evaluate", "mlflow", "export", "registry", "serving",
            "optimize", "release", "monitoring", "tune", "stores", "fleet")  # fmt: skip
PROFILE_SECTIONS = ("model", "train")
REPLACED = ("space",)  # mappings a file gives whole: a search space is not merged with the default one


@dataclass(frozen=True)
class Resolved:
    """Validated settings plus where each leaf of the document came from (``default``, a file, ...)."""

    params: Params
    document: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)


def _merge(base: dict[str, Any], top: dict[str, Any], source: str, sources: dict[str, str], at: str) -> None:
    for key, value in top.items():
        here = f"{at}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in REPLACED:
            _merge(base[key], value, source, sources, here + ".")
        else:
            base[key] = copy.deepcopy(value)
            for old in [k for k in sources if k == here or k.startswith(here + ".")]:
                del sources[old]
            _mark(value, source, sources, here)


def _mark(value: Any, source: str, sources: dict[str, str], at: str) -> None:
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            _mark(inner, source, sources, f"{at}.{key}")
    else:
        sources[at] = source


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _assignment(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {item!r} is not section.key=value")
    return key.strip(), yaml.safe_load(value)


def _place(key: str, profile: str) -> list[str]:
    """``train.lr`` is the active profile's (``profiles.<profile>.train.lr``); other keys are paths."""
    parts = key.split(".")
    return ["profiles", profile, *parts] if parts[0] in PROFILE_SECTIONS else parts


def _set(document: dict[str, Any], parts: list[str], value: Any) -> None:
    node = document
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def resolve(
    path: str | Path | None = "params.yaml",
    profile: str | None = None,
    sets: Iterable[str] = (),
    env: dict[str, str] | None = None,
) -> Resolved:
    """Merge the layers, pick the profile (argument, ``--set profile=``, env, file) and validate."""
    sources: dict[str, str] = {}
    document: dict[str, Any] = {}
    _merge(document, default_document(), _shown(DEFAULTS_FILE), sources, "")
    if path is not None and Path(path).resolve() != DEFAULTS_FILE:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ParamsError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            mine = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path} is not valid YAML: {exc}") from exc
        if not isinstance(mine, dict):
            raise ParamsError(f"{path} must hold a mapping of sections, got {type(mine).__name__}")
        unknown = sorted(set(mine) - set(SECTIONS))
        if unknown:
            raise ParamsError(
                f"{path}: unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})"
            )
        _merge(document, mine, str(path), sources, "")
    layers = [(k, v, f"env {var}") for k, v, var in env_overrides(env)]
    layers += [(*_assignment(item), "--set") for item in sets]
    for _, value, source in [x for x in layers if x[0] == "profile"]:
        document["profile"], sources["profile"] = value, source
    if profile:
        document["profile"], sources["profile"] = profile, "argument"
    name = str(document.get("profile"))
    for key, value, source in [x for x in layers if x[0] != "profile"]:
        parts = _place(key, name)
        _set(document, parts, value)
        _mark(value, source, sources, ".".join(parts))
    return Resolved(_validate(document, name, path), document, sources)


def _validate(document: dict[str, Any], name: str, path: str | Path | None) -> Params:
    unknown = sorted(set(document) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"unknown section(s) {', '.join(unknown)} (known: {', '.join(SECTIONS)})")
    profiles = document.get("profiles") or {}
    if name not in profiles:
        raise ParamsError(f"profile {name!r} is not in {path} (have: {', '.join(profiles) or 'none'})")
    chosen = profiles[name] or {}
    extra = sorted(set(chosen) - set(PROFILE_SECTIONS))
    if extra:
        raise ParamsError(f"profiles.{name}: unknown key(s) {', '.join(extra)} (known: model, train)")
    tune = dict(document.get("tune") or {})
    budget = (tune.pop("profiles", None) or {}).get(name) or {}
    values = {s: document.get(s) or {} for s in SECTIONS if s not in ("profile", "profiles", "tune")}
    values |= {"profile": name, "model": chosen.get("model") or {}, "train": chosen.get("train") or {}}
    values |= {"tune": tune | {"budget": budget}, "raw": copy.deepcopy(document)}
    where = {"model": f"profiles.{name}.model", "train": f"profiles.{name}.train"}
    where |= {"tune.budget": f"tune.profiles.{name}"}
    try:
        params = Params.model_validate(values)
    except ValidationError as exc:
        raise_params_error(exc, Params, where)
    return params


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Read ``path`` over the defaults, apply ``CIFAR10_*`` variables, pick the profile, validate."""
    return resolve(path, profile).params


def _document_of(params: Params) -> dict[str, Any]:
    """The document ``params`` stands for: its sections over the one it was loaded from."""
    document = copy.deepcopy(params.raw) or default_document()
    dumped = params.model_dump(mode="json", exclude={"raw"})
    budget = dumped["tune"].pop("budget")
    for section in SECTIONS[2:]:
        if section != "tune":
            document[section] = dumped[section]
    document.setdefault("tune", {}).update(dumped["tune"])
    document["tune"].setdefault("profiles", {})[params.profile] = budget
    document.setdefault("profiles", {})[params.profile] = {s: dumped[s] for s in PROFILE_SECTIONS}
    document["profile"] = params.profile
    return document


def with_overrides(params: Params, assignments: list[str]) -> Params:
    """``params`` with ``section.key=value`` assignments applied (values read as YAML), validated.

    For one-off runs outside DVC (the device script, quick experiments); ``dvc exp run -S`` is the
    tracked way to change a setting. ``train.*`` and ``model.*`` are the active profile's keys.
    """
    document = _document_of(params)
    for item in assignments:
        key, value = _assignment(item)
        _set(document, _place(key, params.profile), value)
    return _validate(document, params.profile, "the overrides")
