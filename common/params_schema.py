"""The schema of ``params.yaml``: pydantic models with strict types, ranges and cross-field rules.

No field here has a default value. What a missing key means is written once, in the repository's
``params.yaml`` (:data:`common.params_defaults.DEFAULTS_FILE`): every section fills the keys it was
not given from that file before it validates (:meth:`Section._fill`), so ``ServingConfig()`` and a
``params.yaml`` without a ``serving`` section mean the same, and no default in code can disagree
with the file (``tests/common/test_params_schema.py`` checks it). The two exceptions say "no such
bound", not a setting: a :class:`Tolerance` or :class:`SearchParam` key that is absent is unset.

Types are strict: ``lr: "0.1"`` or ``hflip: "no"`` is refused, an ``int`` is accepted where a
float is meant. Lists from YAML become tuples, so every section is hashable and frozen.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from common.params_defaults import defaults_at
from common.params_errors import raise_params_error

ONNX_PRECISIONS = ("fp32", "fp16", "int8")
ALL_PRECISIONS = (*ONNX_PRECISIONS, "trt_fp16")
KINDS = ("KIND_CPU", "KIND_GPU")

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict(), Field(min_length=1)]
OptionalStr = Annotated[str, Strict()]  # "" means none: no DVC remote, no balancer, AWS's own S3 endpoint
Count = Annotated[int, Strict(), Field(ge=0)]  # 0 is allowed, and means what the key's comment says
Positive = Annotated[int, Strict(), Field(ge=1)]
Share = Annotated[float, Strict(), Field(ge=0, le=1)]
Seconds = Annotated[float, Strict(), Field(gt=0)]
OnnxPrecision = Literal["fp32", "fp16", "int8"]
Precision = Literal["fp32", "fp16", "int8", "trt_fp16"]


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Section)


class Section(BaseModel):
    """A frozen section of ``params.yaml``; unknown keys are refused, missing ones come from the file."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    path: ClassVar[str | None] = None  # where this section's defaults live in params.yaml
    not_filled: ClassVar[tuple[str, ...]] = ()  # keys at ``path`` that are not this section's

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        if cls.path is None or not isinstance(data, dict):
            return data
        defaults = defaults_at(cls.path)
        nested = {k: {} for k, f in cls.model_fields.items() if _is_section(f.annotation)}  # fill themselves
        return nested | {k: v for k, v in defaults.items() if k not in cls.not_filled} | data

    def __init__(self, **data: Any) -> None:
        """Built in code (tests, tools), a section refuses bad values with the same lines as the file."""
        try:
            super().__init__(**data)
        except ValidationError as exc:
            where = (self.path or type(self).__name__).replace("@", "<profile>")
            raise_params_error(exc, type(self), {"": where})

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` (``model_copy`` would skip validation)."""
        return type(self).model_validate(self.model_dump() | changes)


class DataConfig(Section):
    path = "data"
    source: Str
    classes: tuple[Str, ...] = Field(min_length=2)
    val_per_class: Count
    seed: Int
    mean: tuple[Float, Float, Float]
    std: tuple[
        Annotated[float, Strict(), Field(gt=0)],
        Annotated[float, Strict(), Field(gt=0)],
        Annotated[float, Strict(), Field(gt=0)],
    ]
    archive_max_bytes: Positive  # what a source archive may unpack to, checked before unpacking
    archive_max_files: Positive

    @model_validator(mode="after")
    def _unique(self) -> Self:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be unique, got {list(self.classes)}")
        return self


class ModelConfig(Section):
    path = "profiles.@.model"  # @: the first profile in params.yaml; another states what differs
    depth: Annotated[int, Strict(), Field(ge=4)]
    width: Positive
    dropout: Annotated[float, Strict(), Field(ge=0, lt=1)]

    @model_validator(mode="after")
    def _depth(self) -> Self:
        if (self.depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4 (10, 16, 22, 28, ...), got {self.depth}")
        return self


class TrainConfig(Section):
    path = "profiles.@.train"
    epochs: Positive
    batch_size: Positive
    train_subset: Count
    lr: Annotated[float, Strict(), Field(gt=0)]
    warmup_epochs: Annotated[float, Strict(), Field(ge=0)]
    momentum: Annotated[float, Strict(), Field(ge=0, lt=1)]
    nesterov: Bool
    weight_decay: Annotated[float, Strict(), Field(ge=0)]
    label_smoothing: Annotated[float, Strict(), Field(ge=0, lt=1)]
    crop_padding: Count
    hflip: Bool
    trivial_augment: Bool
    cutout: Count
    amp: Literal["none", "bf16", "fp16"]
    channels_last: Bool
    num_workers: Count
    seed: Int
    eval_batch_size: Positive
    max_minutes: Annotated[float, Strict(), Field(ge=0)]  # > 0: the schedule ends when it is spent
    ema_decay: Annotated[float, Strict(), Field(ge=0, lt=1)]  # > 0: an EMA of the weights is saved
    compile: Bool


class EvaluateConfig(Section):
    path = "evaluate"
    tta_flip: Bool


class MlflowConfig(Section):
    path = "mlflow"
    experiment: Str


class Tolerance(Section):
    """A precision passes its parity gate when every bound that is set holds (absent: not checked)."""

    max_abs_logit: Annotated[float, Strict(), Field(gt=0)] | None = None
    min_agreement: Share | None = None
    max_accuracy_drop: Share | None = None


class ExportConfig(Section):
    """``max_batch`` is the classifier's batch limit: ONNX axis, TensorRT profile, served config."""

    path = "export"
    precisions: tuple[OnnxPrecision, ...] = Field(min_length=1)
    required: tuple[Precision, ...]
    opset: Annotated[int, Strict(), Field(ge=17)]
    max_batch: Positive
    parity_images: Positive
    calibration_images: Positive
    accuracy_images: Count
    tolerances: dict[Precision, Tolerance]

    @model_validator(mode="before")
    @classmethod
    def _merge_tolerances(cls, data: Any) -> Any:
        """A file's ``tolerances`` names only the precisions it changes; the rest keep the file's."""
        if isinstance(data, dict) and isinstance(data.get("tolerances"), dict):
            data = data | {"tolerances": defaults_at("export.tolerances") | data["tolerances"]}
        return data

    @model_validator(mode="after")
    def _required_exported(self) -> Self:
        missing = sorted(set(self.required) - set(self.precisions) - {"trt_fp16"})
        if missing:
            raise ValueError(f"required precision(s) {missing} are not in precisions {list(self.precisions)}")
        return self


class RegistryConfig(Section):
    """One registered model per served form (``cifar10-wrn-fp32`` ...), each one Triton model."""

    path = "registry"
    model_prefix: Annotated[str, Strict(), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    serve: tuple[Precision, ...] = Field(min_length=1)
    ensemble_target: Precision

    def registered_name(self, precision: str) -> str:
        return f"{self.model_prefix}-{precision.replace('_', '-')}"

    def triton_name(self, precision: str) -> str:
        return f"wrn_{precision}"


class GpuServingConfig(Section):
    """What ``KIND_GPU`` classifiers add (``sync --kind KIND_GPU``): NVIDIA's documented GPU settings."""

    path = "serving.gpu"
    onnx_accelerator: Literal["tensorrt", "cuda"]
    trt_precision: Literal["FP16", "FP32"]
    trt_workspace_bytes: Annotated[int, Strict(), Field(ge=1 << 20)]
    trt_cache_dir: Annotated[str, Strict(), Field(pattern=r"^[^/]+/?$")]  # one folder name
    served_repository: Annotated[str, Strict(), Field(pattern=r"^/")]  # absolute, where the server runs
    cuda_graphs: Bool
    gpus: tuple[Count, ...] = Field(min_length=1)
    pinned_memory: Bool


class ServingConfig(Section):
    """How Triton serves; the classifiers' batch limit is not here but ``export.max_batch``."""

    path = "serving"
    preferred_batch_sizes: tuple[Positive, ...]
    max_queue_delay_us: Count
    instance_count: Positive
    kind: Literal["KIND_CPU", "KIND_GPU"]
    max_image_bytes: Annotated[int, Strict(), Field(ge=64)]
    max_image_pixels: Annotated[int, Strict(), Field(ge=32 * 32)]
    preprocess_max_batch: Positive
    postprocess_max_batch: Positive
    python_queue_delay_us: Count
    warmup: Bool
    warmup_max_batch: Count
    metrics_flush_s: Seconds
    gpu: GpuServingConfig


class OptimizeConfig(Section):
    """``cifar10 optimize``: the grid it measures per form, the load, and the objective."""

    path = "optimize"
    preferred_batch_sizes: tuple[tuple[Positive, ...], ...] = Field(min_length=1)  # () = batch what is queued
    max_queue_delay_us: tuple[Count, ...] = Field(min_length=1)
    instance_counts: tuple[Positive, ...] = Field(min_length=1)
    images_per_request: Positive
    concurrency: Positive
    seconds: Seconds
    warmup_s: Annotated[float, Strict(), Field(ge=0)]
    p99_budget_ms: Seconds
    accuracy_margin: Annotated[float, Strict(), Field(ge=0, lt=1)]


class ReleaseConfig(Section):
    """``cifar10 release``: the gate, the steps and their windows, and what a step may not breach."""

    path = "release"
    accuracy_margin: Annotated[float, Strict(), Field(ge=0, lt=1)]
    shadow_fraction: Share
    shadow_window_s: Seconds
    canary_weights: tuple[Annotated[float, Strict(), Field(gt=0, le=1)], ...] = Field(min_length=1)
    canary_window_s: Seconds
    check_interval_s: Seconds
    min_images: Positive
    max_error_ratio: Share
    max_p99_ratio: Annotated[float, Strict(), Field(ge=1)]
    p99_slack_ms: Annotated[float, Strict(), Field(ge=0)]
    latency_min_requests: Positive
    latency_settle_s: Annotated[float, Strict(), Field(ge=0)]
    agreement_slack: Share
    min_agreement: Share | None  # null: the limit derived from the gate (release/limits.py)
    class_margin: Annotated[float, Strict(), Field(ge=0, lt=1)]
    min_class_agreement: Share | None
    min_class_images: Positive
    claim_settle_s: Seconds
    probe_images: Count
    max_psi: Annotated[float, Strict(), Field(gt=0)]
    confidence_z: Annotated[float, Strict(), Field(gt=0)]
    owner_timeout_s: Seconds
    prometheus_url: Annotated[str, Strict(), Field(pattern=r"^https?://")]

    @model_validator(mode="after")
    def _weights_rise_to_one(self) -> Self:
        weights = list(self.canary_weights)
        if weights != sorted(weights) or weights[-1] != 1.0:
            raise ValueError(f"canary_weights must rise and end at 1.0, got {weights}")
        return self


class MonitoringConfig(Section):
    """Quality without labels: the export stage's reference, the alerts and ``cifar10 monitor status``."""

    path = "monitoring"
    reference_split: Literal["validation", "test"]
    reference_images: Count
    statistic_bins: Annotated[int, Strict(), Field(ge=2, le=50)]
    accuracy_drop: Annotated[float, Strict(), Field(gt=0, lt=1)]
    input_psi: Annotated[float, Strict(), Field(gt=0)]
    min_predictions: Positive
    interval_z: Annotated[float, Strict(), Field(gt=0)]


class SearchParam(Section):
    """One dimension of the search: a float range (``low``/``high``, optionally ``log``) or ``choices``."""

    low: Float | None = None
    high: Float | None = None
    log: Bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> Self:
        ranged = self.low is not None and self.high is not None
        if ranged == (self.choices is not None) or (ranged and not 0 <= self.low < self.high):
            raise ValueError("each searched setting needs 0 <= low < high, or choices (not both)")
        if self.log and (not ranged or self.low <= 0):
            raise ValueError("a log range needs low > 0")
        return self


SEARCHABLE: dict[str, type[Section]] = {"train": TrainConfig, "model": ModelConfig}


class TuneBudget(Section):
    """What one profile's study may spend, and the short training each trial gets."""

    path = "tune.profiles.@"
    trials: Positive
    timeout_minutes: Seconds
    epochs: Positive
    train_subset: Count
    val_images: Count
    space: dict[str, SearchParam]  # "train.lr" / "model.width" -> range

    @model_validator(mode="after")
    def _searchable(self) -> Self:
        for key in self.space:
            section, _, name = key.partition(".")
            if section not in SEARCHABLE or name not in SEARCHABLE[section].model_fields:
                raise ValueError(f"{key!r} is not a setting of a profile (train.<key> or model.<key>)")
        return self


class TuneConfig(Section):
    """``cifar10 tune``: the Optuna study over the active profile's settings."""

    path = "tune"
    not_filled = ("profiles",)  # each profile's budget is ``budget``, the active one's
    sampler_seed: Int
    pruner: Literal["median", "halving"]
    startup_trials: Count
    warmup_epochs: Count
    heartbeat_s: Positive  # Optuna's heartbeat takes whole seconds
    budget: TuneBudget  # of the active profile (params.yaml: tune.profiles.<profile>)


class StoresConfig(Section):
    """Where each store lives, one URI per store (:mod:`common.stores`, ``docs/stores.md``).

    A URI here names a place, never a secret: a password in one is refused, so ``params.yaml`` can be
    committed and logged. Credentials come from the environment (``PGPASSWORD``, ``AWS_*``) or files
    it names (``PGPASSFILE``, ``AWS_SHARED_CREDENTIALS_FILE``).
    """

    path = "stores"
    tracking: Str
    artifacts: Str
    s3_endpoint: OptionalStr
    model_repository: Str
    optuna: Str
    dvc_remote: OptionalStr

    @model_validator(mode="after")
    def _no_secrets(self) -> Self:
        from common.stores import check_uri

        for key in type(self).model_fields:
            check_uri(key, getattr(self, key))
        return self


class ReplicaConfig(Section):
    """One Triton replica of ``fleet.replicas``: its name in the balancer and its endpoints."""

    name: Str
    grpc: Str  # host:port
    http: OptionalStr  # host:port ("": not reached over HTTP)


class FleetConfig(Section):
    """Several Triton replicas behind a balancer (``docs/fleet.md``); none: the one ``--server`` names."""

    path = "fleet"
    replicas: tuple[ReplicaConfig, ...]
    service: OptionalStr
    balancer: OptionalStr
    balancer_admin: OptionalStr
    drain_timeout_s: Seconds

    @property
    def named(self) -> bool:
        """Whether a fleet is named at all; none (the default): the one server ``--server`` names."""
        return bool(self.replicas or self.service)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.replicas and self.service:
            raise ValueError("name the replicas or a service (fleet.service), not both")
        names = [r.name for r in self.replicas]
        if len(set(names)) != len(names):
            raise ValueError(f"replica names must differ, got {names}")
        return self


class Params(BaseModel):
    """Everything ``params.yaml`` holds, with the active training profile already selected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    profile: Str
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    optimize: OptimizeConfig = Field(default_factory=OptimizeConfig)
    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    stores: StoresConfig = Field(default_factory=StoresConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)  # the resolved document, as logged

    def replace(self, **changes: Any) -> Params:
        return self.model_copy(update=changes)
