"""The desired state of the Triton model repository, as plain frozen dataclasses.

Everything that decides what Triton serves (which classifiers, which versions, which version the
public ensemble routes to, how images are normalised) lives in one :class:`RepositorySpec`. The
repository on disk is a pure function of it (:func:`serving.repository.build_repository`), and a
rollout is a transition between two of them (:func:`serving.rollout.apply.apply`), so validating the spec up
front catches mistakes before Triton ever sees a half-sensible ``config.pbtxt``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from common.params_schema import GpuServingConfig, ServingConfig

BACKENDS = ("onnxruntime", "tensorrt")
KINDS = ("KIND_CPU", "KIND_GPU")
PREPROCESS = "preprocess"
POSTPROCESS = "postprocess"
ROUTER = "router"
# Written into the router's folder by the release controller to stop all routing to the candidate at
# once (the router checks it on every batch); read by no one else.
ROUTER_HALT_FILE = "halt.json"
ROUTE_KEY = "route-key"  # the request parameter (or forwarded header) that pins a caller to one version
LEGACY_INTERFACE = "IMAGE UINT8[-1] -> LABELS, PROBABILITIES (top-k), CLASS_INDEX"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _serving(key: str) -> Any:
    """``serving.<key>`` from params.yaml: a spec built without a setting gets the pipeline's value."""
    return getattr(_serving_defaults(), key)


@functools.cache
def _serving_defaults() -> ServingConfig:
    return ServingConfig()  # validated once: params.yaml does not change while the process runs


def _setting(key: str) -> Any:
    return dataclasses.field(default_factory=lambda: _serving(key))


class SpecError(ValueError):
    """A spec that cannot describe a working repository; the message names the offending field."""


@dataclass(frozen=True)
class ServedVersion:
    """One model version: the registry version number doubles as Triton's version folder name."""

    version: int
    artifact: Path
    # Its quality reference (monitoring.quality_reference), shipped to the python models that count
    # against it; None: registered before references existed, so its quality is not counted.
    quality_reference: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "artifact", Path(self.artifact))
        if self.quality_reference is not None:
            object.__setattr__(self, "quality_reference", Path(self.quality_reference))


@dataclass(frozen=True)
class ServedModel:
    """A classifier and every version of it that Triton should hold in memory.

    ``versions`` usually holds production and staging; ``production`` is the one the ensemble uses.
    Other versions stay reachable by explicit version number (shadow traffic, canary checks).
    """

    name: str
    backend: str
    versions: tuple[ServedVersion, ...]
    production: int
    max_batch_size: int  # what every served version's artifact supports (the export's max_batch)
    input_name: str = "input"
    output_name: str = "logits"
    preferred_batch_sizes: tuple[int, ...] = _setting("preferred_batch_sizes")
    max_queue_delay_us: int = _setting("max_queue_delay_us")
    instance_count: int = _setting("instance_count")
    kind: str = _setting("kind")

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(self.versions))
        object.__setattr__(self, "preferred_batch_sizes", tuple(self.preferred_batch_sizes))

    @property
    def version_numbers(self) -> tuple[int, ...]:
        return tuple(sorted(v.version for v in self.versions))

    @property
    def model_filename(self) -> str:
        return "model.plan" if self.backend == "tensorrt" else "model.onnx"

    def validate(self) -> None:
        where = f"classifier {self.name!r}"
        if not _NAME.match(self.name):
            raise SpecError(f"{where}: name must match {_NAME.pattern}")
        if self.backend not in BACKENDS:
            raise SpecError(f"{where}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.kind not in KINDS:
            raise SpecError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        numbers = [v.version for v in self.versions]
        if not numbers:
            raise SpecError(f"{where}: at least one version must be served")
        if len(set(numbers)) != len(numbers):
            raise SpecError(f"{where}: duplicate version numbers {sorted(numbers)}")
        if any(n < 1 for n in numbers):
            raise SpecError(f"{where}: version numbers must be >= 1 (Triton folder names), got {numbers}")
        if self.production not in numbers:
            raise SpecError(f"{where}: production version {self.production} is not among served {numbers}")
        if self.max_batch_size < 1:
            raise SpecError(f"{where}: max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise SpecError(f"{where}: preferred batch sizes {bad} outside 1..{self.max_batch_size}")
        if self.instance_count < 1 or self.max_queue_delay_us < 0:
            raise SpecError(f"{where}: instance_count must be >= 1 and max_queue_delay_us >= 0")
        for v in self.versions:
            if not v.artifact.is_file():
                raise SpecError(f"{where}: artifact of version {v.version} not found: {v.artifact}")
            if v.quality_reference is not None and not v.quality_reference.is_file():
                missing = v.quality_reference
                raise SpecError(f"{where}: quality reference of version {v.version} not found: {missing}")


@dataclass(frozen=True)
class Release:
    """A candidate served beside production through the ``router`` step of the public ensemble.

    ``shadow_fraction`` of the requests the ensemble answers from production are also sent to the
    candidate, whose answers are compared and discarded; ``canary_weight`` of them are answered by
    the candidate instead. A request with a ``route-key`` parameter is routed by a hash of the key,
    so one key always lands on the same version while the weight stays put (and a rising weight
    only ever moves keys from production to the candidate).
    """

    candidate_model: str
    candidate_version: int
    shadow_fraction: float = 0.0
    canary_weight: float = 0.0

    def validate(self, spec: RepositorySpec) -> None:
        where = f"release of {self.candidate_model}:{self.candidate_version}"
        model = spec.classifier(self.candidate_model)
        if self.candidate_version not in model.version_numbers:
            raise SpecError(
                f"{where}: version {self.candidate_version} is not served ({model.version_numbers})"
            )
        if (self.candidate_model, self.candidate_version) == (spec.target.name, spec.target.production):
            raise SpecError(f"{where}: the candidate is what production already serves")
        if not (0.0 <= self.shadow_fraction <= 1.0 and 0.0 <= self.canary_weight <= 1.0):
            raise SpecError(f"{where}: shadow_fraction and canary_weight must lie in [0, 1]")
        if model.max_batch_size < spec.target.max_batch_size:
            raise SpecError(f"{where}: its max_batch_size {model.max_batch_size} is below production's")


@dataclass(frozen=True)
class RepositorySpec:
    """Every classifier plus the public ensemble ``preprocess -> classifier -> postprocess``."""

    classifiers: tuple[ServedModel, ...]
    ensemble_target: str
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    ensemble_name: str = "cifar10"
    # ``predicted_class_total`` in postprocess; off only to measure what it costs (monitoring/bench_*).
    class_metric: bool = True
    # The quality counters (confidence against the ATC threshold, input statistics); off likewise.
    quality_metrics: bool = True
    metrics_flush_s: float = _setting("metrics_flush_s")  # how often python models push those counters
    # What preprocess agrees to decode: encoded bytes per image and decoded pixels per image.
    max_image_bytes: int = _setting("max_image_bytes")
    max_image_pixels: int = _setting("max_image_pixels")
    # What the public ensemble speaks; a rollout across a change of it can fail requests in flight.
    interface: str = "IMAGE BYTES[1] -> PROBABILITIES FP32[classes], labelled"
    # The python models' own batching (params.yaml serving section).
    preprocess_max_batch: int = _setting("preprocess_max_batch")
    postprocess_max_batch: int = _setting("postprocess_max_batch")
    python_queue_delay_us: int = _setting("python_queue_delay_us")
    # A candidate in shadow or canary (``None``: the ensemble calls production's classifier directly).
    release: Release | None = None
    # ``model_warmup`` samples in every classifier and python model but the router (serving.warmup).
    warmup: bool = _setting("warmup")
    # Warm only batch sizes up to this (0: every preferred size); on a CPU host each sample is real work.
    warmup_max_batch: int = _setting("warmup_max_batch")
    # GPU execution settings of the KIND_GPU classifiers (``None``: params.yaml's ``serving.gpu``).
    gpu: GpuServingConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.release, dict):
            object.__setattr__(self, "release", Release(**self.release))
        if isinstance(self.gpu, dict):
            object.__setattr__(self, "gpu", GpuServingConfig(**self.gpu))
        for name in ("classifiers", "classes", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def classifier(self, name: str) -> ServedModel:
        for model in self.classifiers:
            if model.name == name:
                return model
        raise SpecError(f"no classifier named {name!r}; have {[m.name for m in self.classifiers]}")

    @property
    def target(self) -> ServedModel:
        """The classifier the ensemble routes to (its ``production`` version)."""
        return self.classifier(self.ensemble_target)

    def validate(self) -> None:
        names = [m.name for m in self.classifiers]
        if not names:
            raise SpecError("a repository needs at least one classifier")
        reserved = {PREPROCESS, POSTPROCESS, ROUTER, self.ensemble_name}
        clash = sorted((set(names) & reserved) | {n for n in names if names.count(n) > 1})
        if clash:
            raise SpecError(f"model names must be unique and not one of {sorted(reserved)}: {clash}")
        if not _NAME.match(self.ensemble_name):
            raise SpecError(f"ensemble_name must match {_NAME.pattern}, got {self.ensemble_name!r}")
        for model in self.classifiers:
            model.validate()
        self.target  # noqa: B018 - raises SpecError when the target is missing
        if self.release is not None:
            self.release.validate(self)
        if len(self.classes) < 2 or any(not c or "\n" in c for c in self.classes):
            raise SpecError(f"classes must be >= 2 non-empty single-line names, got {self.classes}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise SpecError(f"mean and std need 3 channels with std > 0, got {self.mean} / {self.std}")
        if not isinstance(self.class_metric, bool):
            raise SpecError(f"class_metric must be true or false, got {self.class_metric!r}")
        if min(self.preprocess_max_batch, self.postprocess_max_batch) < 1 or self.python_queue_delay_us < 0:
            raise SpecError("python models need max batch sizes >= 1 and a queue delay >= 0")
        if self.max_image_bytes < 64 or self.max_image_pixels < 32 * 32:
            raise SpecError(
                f"max_image_bytes must be >= 64 and max_image_pixels >= 1024, "
                f"got {self.max_image_bytes} / {self.max_image_pixels}"
            )


def spec_to_dict(spec: RepositorySpec) -> dict[str, Any]:
    """JSON-ready form (paths as strings); stored beside the repository so tooling can diff states."""

    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return value

    return convert(spec)


def spec_from_dict(data: dict[str, Any]) -> RepositorySpec:
    """Inverse of :func:`spec_to_dict`; unknown keys raise so a format drift is never silent.

    A spec written before the BYTES interface (it has ``top_k``) reads as the old interface, so a
    rollout from it warns that requests straddling the switch may fail.
    """
    if "top_k" in data:
        data = {k: v for k, v in data.items() if k != "top_k"} | {"interface": LEGACY_INTERFACE}
    try:
        classifiers = tuple(
            ServedModel(**{**m, "versions": tuple(ServedVersion(**v) for v in m["versions"])})
            for m in data["classifiers"]
        )
        return RepositorySpec(**{**data, "classifiers": classifiers})
    except (KeyError, TypeError) as exc:
        raise SpecError(f"not a serialised RepositorySpec: {exc}") from exc
