"""Typed views of ``params.yaml``.

Stages receive these dataclasses rather than raw dicts so that a typo in ``params.yaml`` fails at load
time with the offending key named, instead of deep inside a training loop.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

SOURCE_ENV = "CIFAR10_SOURCE"
PROFILE_ENV = "CIFAR10_PROFILE"

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    source: str = "cifar10"
    classes: tuple[str, ...] = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    val_per_class: int = 500
    seed: int = 0
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
    archive_max_bytes: int = 2 << 30  # what a source archive may unpack to, checked before unpacking
    archive_max_files: int = 250_000

    def resolved_source(self) -> str:
        """The data source after the environment override (CI points it at the offline mirror)."""
        return os.environ.get(SOURCE_ENV) or self.source


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 28
    width: int = 10
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128
    train_subset: int = 0
    lr: float = 0.1
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    crop_padding: int = 4
    hflip: bool = True
    trivial_augment: bool = False
    cutout: int = 0
    amp: str = "none"
    channels_last: bool = False
    num_workers: int = 0
    seed: int = 0
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        if self.amp not in {"none", "bf16", "fp16"}:
            raise ValueError(f"train.amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be positive")


@dataclass(frozen=True)
class EvaluateConfig:
    tta_flip: bool = True


@dataclass(frozen=True)
class Params:
    """Everything a stage may read from ``params.yaml``, with the active profile already selected."""

    profile: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    experiment: str = "cifar10-wrn"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def from_dict(cls: type[T], values: dict[str, Any] | None) -> T:
    """Build a dataclass from a mapping, refusing keys it does not know."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key(s) for {cls.__name__}: {', '.join(unknown)}")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Read ``params.yaml`` and resolve the active profile (argument, then env, then the file's key)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    name = profile or os.environ.get(PROFILE_ENV) or raw.get("profile", "cpu")
    profiles = raw.get("profiles", {})
    if name not in profiles:
        raise ValueError(f"profile {name!r} not in {path} (have: {', '.join(profiles) or 'none'})")
    chosen = profiles[name]
    return Params(
        profile=name,
        data=from_dict(DataConfig, raw.get("data")),
        model=from_dict(ModelConfig, chosen.get("model")),
        train=from_dict(TrainConfig, chosen.get("train")),
        evaluate=from_dict(EvaluateConfig, raw.get("evaluate")),
        experiment=(raw.get("mlflow") or {}).get("experiment", "cifar10-wrn"),
        raw=raw,
    )
