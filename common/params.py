"""The one typed loader of ``params.yaml``: every section a frozen dataclass, unknown keys refused.

Stages receive these dataclasses rather than raw dicts so that a typo in ``params.yaml`` fails at load
time with the offending key named, instead of deep inside a training loop. Each package reads its own
section (``params.export``, ``params.serving``, ...) from the :class:`Params` that
:func:`load_params` returns, and no package parses ``params.yaml`` itself. One fact, one key: the
classifier's maximum batch, for example, is ``export.max_batch`` only; the registry records it per
version and ``sync`` writes it into ``config.pbtxt`` from there.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

SOURCE_ENV = "CIFAR10_SOURCE"
PROFILE_ENV = "CIFAR10_PROFILE"
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
ALL_PRECISIONS = (*ONNX_PRECISIONS, "trt_fp16")
KINDS = ("KIND_CPU", "KIND_GPU")

T = TypeVar("T")


@dataclass(frozen=True)
class DataConfig:
    source: str = "cifar10"
    classes: tuple[str, ...] = (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
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
    max_minutes: float = 0.0  # > 0: the schedule ends when this much training time is spent (epochs: a cap)
    ema_decay: float = 0.0  # > 0: evaluate and save an exponential moving average of the weights
    compile: bool = False  # torch.compile the training model (CUDA only)

    def __post_init__(self) -> None:
        if self.max_minutes < 0:
            raise ValueError("train.max_minutes must be >= 0 (0: no time budget)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("train.ema_decay must be in [0, 1) (0: no EMA)")
        if self.amp not in {"none", "bf16", "fp16"}:
            raise ValueError(f"train.amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("train.epochs and train.batch_size must be positive")


@dataclass(frozen=True)
class EvaluateConfig:
    tta_flip: bool = True


@dataclass(frozen=True)
class MlflowConfig:
    experiment: str = "cifar10-wrn"


@dataclass(frozen=True)
class Tolerance:
    """A precision passes its parity gate when every bound that is set holds (None = not checked)."""

    max_abs_logit: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(max_abs_logit=1e-3, min_agreement=1.0),
    "fp16": Tolerance(min_agreement=0.995),
    "int8": Tolerance(max_accuracy_drop=0.005),
    "trt_fp16": Tolerance(min_agreement=0.995),
}


@dataclass(frozen=True)
class ExportConfig:
    """``max_batch`` is the classifier's batch limit: ONNX axis, TensorRT profile, served config."""

    precisions: tuple[str, ...] = ONNX_PRECISIONS
    required: tuple[str, ...] = ("fp32",)
    opset: int = 18
    max_batch: int = 256
    parity_images: int = 1000
    calibration_images: int = 512
    accuracy_images: int = 0
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.precisions) - set(ONNX_PRECISIONS))
        if unknown:
            raise ValueError(
                f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(ONNX_PRECISIONS)}"
            )
        if self.opset < 17:
            raise ValueError(f"export.opset must be 17 or newer, got {self.opset}")
        if self.max_batch < 1:
            raise ValueError("export.max_batch must be positive")


@dataclass(frozen=True)
class RegistryConfig:
    """One registered model per served form (``cifar10-wrn-fp32`` ...), each one Triton model."""

    model_prefix: str = "cifar10-wrn"
    serve: tuple[str, ...] = ("fp32",)
    ensemble_target: str = "fp32"

    def registered_name(self, precision: str) -> str:
        return f"{self.model_prefix}-{precision.replace('_', '-')}"

    def triton_name(self, precision: str) -> str:
        return f"wrn_{precision}"


@dataclass(frozen=True)
class GpuServingConfig:
    """What ``KIND_GPU`` configs add (``sync --kind KIND_GPU``): NVIDIA's documented GPU settings."""

    onnx_accelerator: str = "tensorrt"  # tensorrt: ORT's TensorRT EP (CUDA EP for refused layers) | cuda
    trt_precision: str = "FP16"  # FP16 | FP32
    trt_workspace_bytes: int = 1 << 30
    trt_cache_dir: str = "trt_cache"  # ORT's engine cache inside each model folder; sync keeps it
    served_repository: str = "/triton/model_repository"  # the repository's path where the server runs
    cuda_graphs: bool = True  # TensorRT plans: a CUDA graph per preferred batch size
    gpus: tuple[int, ...] = (0,)  # instance groups: serving.instance_count instances on each of these
    pinned_memory: bool = True  # pinned host buffers for inputs and outputs

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", tuple(self.gpus))
        if self.onnx_accelerator not in ("tensorrt", "cuda") or self.trt_precision not in ("FP16", "FP32"):
            raise ValueError("serving.gpu: onnx_accelerator is tensorrt|cuda and trt_precision FP16|FP32")
        if self.trt_workspace_bytes < 1 << 20 or not self.gpus or min(self.gpus) < 0:
            raise ValueError("serving.gpu: trt_workspace_bytes >= 1 MiB and at least one GPU index >= 0")
        if not self.served_repository.startswith("/") or "/" in self.trt_cache_dir.strip("/"):
            raise ValueError("serving.gpu: served_repository is absolute and trt_cache_dir one folder name")


@dataclass(frozen=True)
class ServingConfig:
    """How Triton serves; the classifiers' batch limit is not here but ``export.max_batch``."""

    preferred_batch_sizes: tuple[int, ...] = (8, 32, 64)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    kind: str = "KIND_CPU"
    max_image_bytes: int = 1 << 20
    max_image_pixels: int = 4096 * 4096
    preprocess_max_batch: int = 64  # decoding is the costly python step: one stub, bounded memory
    postprocess_max_batch: int = 256
    python_queue_delay_us: int = 500
    warmup: bool = True  # model_warmup samples: a loaded version answers warm from its first request
    warmup_max_batch: int = 0  # warm batch sizes up to this only (0: batch 1 and every preferred size)
    gpu: GpuServingConfig = field(default_factory=GpuServingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.gpu, dict):
            object.__setattr__(self, "gpu", from_dict(GpuServingConfig, self.gpu, "serving.gpu"))
        if self.kind not in KINDS:
            raise ValueError(f"serving.kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class OptimizeConfig:
    """``cifar10-optimize``: the grid it measures per form, the load, and the objective."""

    preferred_batch_sizes: tuple[tuple[int, ...], ...] = ((), (8, 32))  # () = batch what is queued
    max_queue_delay_us: tuple[int, ...] = (0, 1000)
    instance_counts: tuple[int, ...] = (1, 2)
    images_per_request: int = 8
    concurrency: int = 4
    seconds: float = 5.0
    warmup_s: float = 1.0
    p99_budget_ms: float = 1000.0
    accuracy_margin: float = 0.005  # 0.5 points below fp32's test accuracy at most

    def __post_init__(self) -> None:
        object.__setattr__(self, "preferred_batch_sizes", tuple(tuple(s) for s in self.preferred_batch_sizes))
        if not (self.preferred_batch_sizes and self.max_queue_delay_us and self.instance_counts):
            raise ValueError(
                "optimize: preferred_batch_sizes, max_queue_delay_us and instance_counts need values"
            )
        if any(d < 0 for d in self.max_queue_delay_us) or any(n < 1 for n in self.instance_counts):
            raise ValueError("optimize: queue delays must be >= 0 and instance counts >= 1")
        if self.images_per_request < 1 or self.concurrency < 1 or self.seconds <= 0:
            raise ValueError("optimize: images_per_request, concurrency and seconds must be positive")
        if not 0 <= self.accuracy_margin < 1 or self.p99_budget_ms <= 0:
            raise ValueError("optimize: accuracy_margin must be in [0, 1) and p99_budget_ms positive")


@dataclass(frozen=True)
class ReleaseConfig:
    """``cifar10-release``: the gate, the steps and their windows, and what a step may not breach."""

    accuracy_margin: float = 0.005  # gate: candidate's test accuracy >= production's - this
    shadow_fraction: float = 0.5  # of production's requests also run on the candidate in the shadow step
    shadow_window_s: float = 300.0
    canary_weights: tuple[float, ...] = (0.1, 0.5, 1.0)  # shares of traffic the candidate answers, in order
    canary_window_s: float = 300.0
    check_interval_s: float = 15.0  # how often a step is judged; a breach rolls back at the next check
    min_images: int = 200  # on the candidate per step before a step may pass (or a ratio may breach)
    max_error_ratio: float = 0.01
    max_p99_ratio: float = 1.5  # candidate p99 <= production p99 x this + p99_slack_ms
    p99_slack_ms: float = 5.0
    latency_min_requests: int = 500  # a p99 may breach only past this many candidate requests
    latency_settle_s: float = 10.0  # latency counts from this long after a step's rollout
    agreement_slack: float = 0.02  # shadow agreement >= p + (p - accuracy_margin) - 1 - this
    min_agreement: float | None = None  # a fixed limit instead of the one derived from the gate
    class_margin: float = 0.05  # per class: candidate keeps within this of production's precision
    min_class_agreement: float | None = None  # a fixed per-class limit instead of the derived ones
    min_class_images: int = 20  # a class's agreement is judged from this many shadowed images of it
    claim_settle_s: float = 2.0  # a starting controller's claim waits this long for rival claims
    probe_images: int = 1000  # labelled test images both versions answer at shadow's start (0: none)
    max_psi: float = 0.1  # class-mix divergence, candidate vs production
    confidence_z: float = 3.0  # ratios breach only when their exact interval at z sigma does
    owner_timeout_s: float = 120.0  # a controller silent this long no longer owns its release
    prometheus_url: str = "http://localhost:9090"

    def __post_init__(self) -> None:
        object.__setattr__(self, "canary_weights", tuple(float(w) for w in self.canary_weights))
        weights = self.canary_weights
        if not weights or any(not 0 < w <= 1 for w in weights) or list(weights) != sorted(weights):
            raise ValueError(f"release.canary_weights must rise within (0, 1], got {list(weights)}")
        if weights[-1] != 1.0:
            raise ValueError("release.canary_weights must end at 1.0: production is what served all traffic")
        if not 0 <= self.shadow_fraction <= 1 or not 0 <= self.accuracy_margin < 1:
            raise ValueError("release: shadow_fraction must lie in [0, 1] and accuracy_margin in [0, 1)")
        if min(self.shadow_window_s, self.canary_window_s, self.check_interval_s) <= 0 or self.min_images < 1:
            raise ValueError("release: windows and check_interval_s must be positive, min_images >= 1")
        if not 0 <= self.class_margin < 1 or self.min_class_images < 1:
            raise ValueError("release: class_margin must lie in [0, 1) and min_class_images be >= 1")
        if self.claim_settle_s <= 0 or self.latency_settle_s < 0 or self.probe_images < 0:
            raise ValueError(
                "release: claim_settle_s must be positive, latency_settle_s and probe_images >= 0"
            )


@dataclass(frozen=True)
class SearchParam:
    """One dimension of the search: a float range (``low``/``high``, optionally ``log``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        ranged = self.low is not None and self.high is not None
        if ranged == (self.choices is not None) or (ranged and not 0 <= self.low < self.high):
            raise ValueError("tune: each searched setting needs 0 <= low < high, or choices (not both)")
        if self.log and (not ranged or self.low <= 0):
            raise ValueError("tune: a log range needs low > 0")


@dataclass(frozen=True)
class TuneBudget:
    """What one profile's study may spend, and the short training each trial gets."""

    trials: int = 16  # finished (complete or pruned) trials the study stops at
    timeout_minutes: float = 14.0  # ... or this much wall time, over every invocation of the study
    epochs: int = 4  # per trial; pruning looks at each epoch's validation accuracy
    train_subset: int = 5000  # class-balanced training images per trial (0: all)
    val_images: int = 1000  # class-balanced validation images each epoch is scored on (0: all)
    space: dict[str, SearchParam] = field(default_factory=dict)  # "train.lr" / "model.width" -> range

    def __post_init__(self) -> None:
        if self.trials < 1 or self.epochs < 1 or self.timeout_minutes <= 0:
            raise ValueError("tune: trials, epochs and timeout_minutes must be positive")
        searchable = {"train": TrainConfig, "model": ModelConfig}
        for key in self.space:
            section, _, name = key.partition(".")
            cls = searchable.get(section)
            if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(f"tune: {key!r} is not a setting of a profile (train.<key> or model.<key>)")


@dataclass(frozen=True)
class TuneConfig:
    """``cifar10-tune``: the Optuna study over the active profile's settings."""

    sampler_seed: int = 0  # TPE's seed: the same study draws the same trials
    pruner: str = "median"  # median | halving (successive halving)
    startup_trials: int = 3  # finished trials before the median pruner may prune
    warmup_epochs: int = 1  # epochs of a trial before it may be pruned
    storage: str = "optuna.db"  # Optuna's sqlite study store, beside mlflow.db
    budget: TuneBudget = field(default_factory=TuneBudget)  # of the active profile

    def __post_init__(self) -> None:
        if self.pruner not in ("median", "halving"):
            raise ValueError(f"tune.pruner must be median or halving, got {self.pruner!r}")


def _tune(raw: dict[str, Any] | None, profile: str) -> TuneConfig:
    """``tune`` with the active profile's budget and search space (``tune.profiles.<profile>``)."""
    raw = dict(raw or {})
    where = f"tune.profiles.{profile}"
    budget = dict((raw.pop("profiles", None) or {}).get(profile) or {})
    space = {
        k: from_dict(SearchParam, v, f"{where}.space.{k}")
        for k, v in (budget.pop("space", None) or {}).items()
    }
    tune = from_dict(TuneConfig, raw, "tune")
    return dataclasses.replace(tune, budget=from_dict(TuneBudget, budget | {"space": space}, where))


@dataclass(frozen=True)
class Params:
    """Everything ``params.yaml`` holds, with the active training profile already selected."""

    profile: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build a dataclass from a mapping, refusing keys it does not know (named with their section)."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key(s) in {where or cls.__name__}: {', '.join(unknown)}")
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def _export(raw: dict[str, Any] | None) -> ExportConfig:
    raw = dict(raw or {})
    tolerances = dict(DEFAULT_TOLERANCES)
    for name, bounds in (raw.pop("tolerances", None) or {}).items():
        if name not in ALL_PRECISIONS:
            raise ValueError(f"export.tolerances: unknown precision {name!r}")
        tolerances[name] = from_dict(Tolerance, bounds, f"export.tolerances.{name}")
    return dataclasses.replace(from_dict(ExportConfig, raw, "export"), tolerances=tolerances)


SECTIONS = (
    "profile",
    "profiles",
    "data",
    "evaluate",
    "mlflow",
    "export",
    "registry",
    "serving",
    "optimize",
    "release",
    "tune",
)


def load_params(path: str | Path = "params.yaml", profile: str | None = None) -> Params:
    """Read ``params.yaml`` and resolve the active profile (argument, then env, then the file's key)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) in {path}: {', '.join(unknown)}")
    name = profile or os.environ.get(PROFILE_ENV) or raw.get("profile", "cpu")
    profiles = raw.get("profiles") or {}
    if not profiles and profile is None and not os.environ.get(PROFILE_ENV):
        profiles = {name: {}}  # a file without training profiles (say, for the registry alone)
    if name not in profiles:
        raise ValueError(f"profile {name!r} not in {path} (have: {', '.join(profiles) or 'none'})")
    chosen = dict(profiles[name] or {})
    extra = sorted(set(chosen) - {"model", "train"})
    if extra:
        raise ValueError(f"unknown key(s) in profiles.{name}: {', '.join(extra)}")
    return Params(
        profile=name,
        data=from_dict(DataConfig, raw.get("data"), "data"),
        model=from_dict(ModelConfig, chosen.get("model"), f"profiles.{name}.model"),
        train=from_dict(TrainConfig, chosen.get("train"), f"profiles.{name}.train"),
        evaluate=from_dict(EvaluateConfig, raw.get("evaluate"), "evaluate"),
        mlflow=from_dict(MlflowConfig, raw.get("mlflow"), "mlflow"),
        export=_export(raw.get("export")),
        registry=from_dict(RegistryConfig, raw.get("registry"), "registry"),
        serving=from_dict(ServingConfig, raw.get("serving"), "serving"),
        optimize=from_dict(OptimizeConfig, raw.get("optimize"), "optimize"),
        release=from_dict(ReleaseConfig, raw.get("release"), "release"),
        tune=_tune(raw.get("tune"), name),
        raw=raw,
    )


def with_overrides(params: Params, assignments: list[str]) -> Params:
    """``params`` with ``section.key=value`` assignments applied (values read as YAML), validated.

    For one-off runs outside DVC (the device script, quick experiments); ``dvc exp run -S`` is the
    tracked way to change a setting.
    """
    changes: dict[str, dict[str, Any]] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        section, _, field_name = key.partition(".")
        if not sep or not field_name or not hasattr(params, section):
            raise ValueError(f"override {item!r} is not section.key=value")
        if field_name not in {f.name for f in dataclasses.fields(getattr(params, section))}:
            raise ValueError(f"override {item!r}: {section} has no key {field_name!r}")
        parsed = yaml.safe_load(value)
        changes.setdefault(section, {})[field_name] = tuple(parsed) if isinstance(parsed, list) else parsed
    raw = copy.deepcopy(params.raw)  # what a run logs as its params.yaml must say what it ran with
    for section, values in changes.items():
        if section in ("model", "train"):
            target = raw.setdefault("profiles", {}).setdefault(params.profile, {}).setdefault(section, {})
        else:
            target = raw.setdefault(section, {})
        target.update({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})
    sections = {s: dataclasses.replace(getattr(params, s), **kv) for s, kv in changes.items()}
    return dataclasses.replace(params, raw=raw, **sections)
