"""``config.pbtxt`` for every model in the repository, built as Triton's own protobuf messages.

Building :class:`ModelConfig` messages (rather than formatting text) means a misspelt field fails here,
in Python, and ``text_format`` prints fields in a fixed order, so the same spec always gives the same
bytes - which is what lets :func:`serving.repository.build_repository` be idempotent.
"""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from common.params_schema import GpuServingConfig
from serving.repository import warmup
from serving.repository.gpu_configs import apply_gpu
from serving.repository.spec import (
    POSTPROCESS,
    PREPROCESS,
    ROUTE_KEY,
    ROUTER,
    ROUTER_HALT_FILE,
    RepositorySpec,
    ServedModel,
)

IMAGE_SIZE = 32
CHANNELS = 3
LABELS_FILE = "labels.txt"


def to_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> mc.ModelConfig:
    """The inverse of :func:`to_text`; raises ``text_format.ParseError`` on unknown fields."""
    return text_format.Parse(text, mc.ModelConfig())


def _kind(kind: str) -> int:
    return mc.ModelInstanceGroup.Kind.Value(kind)


def _floats(values: tuple[float, ...]) -> str:
    return ",".join(repr(float(v)) for v in values)


def classifier_config(model: ServedModel, spec: RepositorySpec) -> mc.ModelConfig:
    """A batching classifier; ``label_filename`` enables Triton's classification extension.

    Its ``parameters`` say what the input means (classes, mean, std, layout), so a client that sends
    tensors reads them from what is served instead of trusting its own defaults.
    """
    num_classes = len(spec.classes)
    config = mc.ModelConfig(name=model.name, max_batch_size=model.max_batch_size)
    if model.backend == "tensorrt":
        config.platform = "tensorrt_plan"
    config.backend = model.backend
    config.default_model_filename = model.model_filename
    config.version_policy.specific.versions.extend(model.version_numbers)
    config.input.add(
        name=model.input_name,
        data_type=mc.TYPE_FP32,
        format=mc.ModelInput.FORMAT_NCHW,  # what image clients (NVIDIA's image_client.py) read
        dims=[CHANNELS, IMAGE_SIZE, IMAGE_SIZE],
    )
    config.output.add(
        name=model.output_name, data_type=mc.TYPE_FP32, dims=[num_classes], label_filename=LABELS_FILE
    )
    config.instance_group.add(count=model.instance_count, kind=_kind(model.kind))
    config.dynamic_batching.preferred_batch_size.extend(model.preferred_batch_sizes)
    config.dynamic_batching.max_queue_delay_microseconds = model.max_queue_delay_us
    config.parameters["classes"].string_value = ",".join(spec.classes)
    config.parameters["mean"].string_value = _floats(spec.mean)
    config.parameters["std"].string_value = _floats(spec.std)
    config.parameters["input_layout"].string_value = "NCHW float32 RGB, (pixel/255 - mean)/std"
    dims = [CHANNELS, IMAGE_SIZE, IMAGE_SIZE]
    if model.kind == "KIND_GPU":
        apply_gpu(config, model, spec.gpu or GpuServingConfig(), dims)
    if spec.warmup:
        config.model_warmup.extend(warmup.classifier_samples(model, dims, spec.warmup_max_batch))
    return config


def _python_config(name: str, max_batch_size: int, spec: RepositorySpec) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.version_policy.specific.versions.append(1)
    config.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)
    config.dynamic_batching.max_queue_delay_microseconds = spec.python_queue_delay_us
    return config


def preprocess_config(spec: RepositorySpec) -> mc.ModelConfig:
    """Encoded images in, one per batch element (``BYTES [1]``), normalised ``3 x 32 x 32`` tensors out.

    This is Triton's common image protocol: one request carries many files of different sizes, as
    NVIDIA's ``ensemble_image_client.py`` sends them, with no padding to a common length.
    """
    config = _python_config(PREPROCESS, spec.preprocess_max_batch, spec)
    config.input.add(name="IMAGE", data_type=mc.TYPE_STRING, dims=[1])
    config.output.add(name="INPUT", data_type=mc.TYPE_FP32, dims=[CHANNELS, IMAGE_SIZE, IMAGE_SIZE])
    config.parameters["mean"].string_value = _floats(spec.mean)
    config.parameters["std"].string_value = _floats(spec.std)
    config.parameters["resample"].string_value = "bilinear"
    config.parameters["max_bytes"].string_value = str(spec.max_image_bytes)
    config.parameters["max_pixels"].string_value = str(spec.max_image_pixels)
    # Input statistics, labelled with production's classifier version and binned by its reference.
    config.input.add(name="UNCOUNTED", data_type=mc.TYPE_BOOL, dims=[1], optional=True)  # warm-up only
    _quality_parameters(config, spec)
    config.parameters["quality_model"].string_value = spec.ensemble_target
    config.parameters["quality_version"].string_value = str(spec.target.production)
    if spec.warmup:
        config.model_warmup.extend(warmup.preprocess_samples(spec))
    return config


def _quality_parameters(config: mc.ModelConfig, spec: RepositorySpec) -> None:
    """The quality counters' switch and push interval (references: ``quality/<model>/<version>.json``)."""
    config.parameters["quality_metrics"].string_value = "true" if spec.quality_metrics else "false"
    config.parameters["metrics_flush_s"].string_value = repr(float(spec.metrics_flush_s))


def postprocess_config(spec: RepositorySpec) -> mc.ModelConfig:
    """Logits in, the softmax over every class out (labelled), and the prediction counter.

    Top-k is Triton's classification extension on ``PROBABILITIES`` (``class_count=k`` on the
    requested output), so k is the caller's choice per request. ``target_model``/``target_version``
    become labels of the ``predicted_class_total`` counter, so a dashboard can split the prediction mix
    by the version that produced it; ``class_metric`` (``true``/``false``) turns that counter off,
    which only the overhead benchmark does.
    """
    config = _python_config(POSTPROCESS, spec.postprocess_max_batch, spec)
    config.input.add(name="LOGITS", data_type=mc.TYPE_FP32, dims=[len(spec.classes)])
    config.output.add(
        name="PROBABILITIES", data_type=mc.TYPE_FP32, dims=[len(spec.classes)], label_filename=LABELS_FILE
    )
    config.parameters["target_model"].string_value = spec.ensemble_target
    config.parameters["target_version"].string_value = str(spec.target.production)
    config.parameters["labels_file"].string_value = LABELS_FILE
    config.parameters["class_metric"].string_value = "true" if spec.class_metric else "false"
    _quality_parameters(config, spec)
    # Which version answered each image (0 production, 1 candidate), from the release's router.
    # Optional, so this postprocess serves both ensemble forms while a rollout swaps one for the other.
    config.input.add(name="ROUTE", data_type=mc.TYPE_INT32, dims=[1], optional=True)
    if spec.release is not None:
        config.parameters["candidate_model"].string_value = spec.release.candidate_model
        config.parameters["candidate_version"].string_value = str(spec.release.candidate_version)
    if spec.warmup:
        config.model_warmup.extend(warmup.postprocess_samples(spec))
    return config


def router_config(spec: RepositorySpec) -> mc.ModelConfig:
    """The release's router: encoded images in (as preprocess takes them), the answering version's
    logits out, shadow copies compared.

    Everything it decides comes from these parameters (written from :class:`Release`), so changing a
    weight is a reload of this one small python model, which Triton does without failing a request.
    It decodes with preprocess's parameters, so both agree on every pixel.
    """
    release = spec.release
    assert release is not None
    production, candidate = spec.target, spec.classifier(release.candidate_model)
    config = _python_config(ROUTER, ensemble_max_batch(spec), spec)
    config.input.add(name="IMAGE", data_type=mc.TYPE_STRING, dims=[1])
    config.output.add(name="LOGITS", data_type=mc.TYPE_FP32, dims=[len(spec.classes)])
    config.output.add(name="ROUTE", data_type=mc.TYPE_INT32, dims=[1])
    for role, model, version in (
        ("production", production, production.production),
        ("candidate", candidate, release.candidate_version),
    ):
        config.parameters[f"{role}_model"].string_value = model.name
        config.parameters[f"{role}_version"].string_value = str(version)
        config.parameters[f"{role}_input"].string_value = model.input_name
        config.parameters[f"{role}_output"].string_value = model.output_name
    for key in ("mean", "std", "resample", "max_bytes", "max_pixels"):
        config.parameters[key].string_value = preprocess_config(spec).parameters[key].string_value
    config.parameters["image_size"].string_value = f"{IMAGE_SIZE}x{IMAGE_SIZE}"
    _quality_parameters(config, spec)  # input statistics as preprocess counts them, on production's bins
    config.parameters["quality_model"].string_value = production.name
    config.parameters["quality_version"].string_value = str(production.production)
    config.parameters["shadow_fraction"].string_value = repr(float(release.shadow_fraction))
    config.parameters["canary_weight"].string_value = repr(float(release.canary_weight))
    config.parameters["route_key"].string_value = ROUTE_KEY
    config.parameters["shadow_queue"].string_value = "16"  # dynamic batches waiting for the candidate
    config.parameters["labels_file"].string_value = LABELS_FILE
    config.parameters["halt_file"].string_value = ROUTER_HALT_FILE
    return config


def ensemble_max_batch(spec: RepositorySpec) -> int:
    """Triton rejects an ensemble whose batch limit exceeds any composing model's."""
    return min(spec.preprocess_max_batch, spec.target.max_batch_size, spec.postprocess_max_batch)


def ensemble_config(spec: RepositorySpec) -> mc.ModelConfig:
    """``IMAGE -> preprocess -> classifier:production -> postprocess``: BYTES in, labelled softmax out.

    One input and one labelled output is what Triton's image clients expect (NVIDIA's
    ``ensemble_image_client.py`` runs unchanged): ``IMAGE`` is ``BYTES [1]``, one encoded file per
    batch element, and ``PROBABILITIES`` answers ``class_count=k`` with "score:index:label".
    Every step names its version explicitly. ``-1`` ("latest ready") would send traffic to a staging
    version the moment it loads, because staging versions are usually the newest. While a release
    runs the ensemble is ``IMAGE -> router -> postprocess`` (:func:`router_config`).
    """
    target = spec.target
    config = mc.ModelConfig(
        name=spec.ensemble_name, platform="ensemble", max_batch_size=ensemble_max_batch(spec)
    )
    config.input.add(name="IMAGE", data_type=mc.TYPE_STRING, dims=[1])
    config.output.add(
        name="PROBABILITIES", data_type=mc.TYPE_FP32, dims=[len(spec.classes)], label_filename=LABELS_FILE
    )
    config.parameters["classes"].string_value = ",".join(spec.classes)
    steps = config.ensemble_scheduling.step
    if spec.release is None:
        pre = steps.add(model_name=PREPROCESS, model_version=1)
        pre.input_map["IMAGE"] = "IMAGE"
        pre.output_map["INPUT"] = "preprocessed"
        clf = steps.add(model_name=target.name, model_version=target.production)
        clf.input_map[target.input_name] = "preprocessed"
        clf.output_map[target.output_name] = "logits"
    else:  # the router decodes, calls production or the candidate (BLS), and says which answered
        route = steps.add(model_name=ROUTER, model_version=1)
        route.input_map["IMAGE"] = "IMAGE"
        route.output_map["LOGITS"] = "logits"
        route.output_map["ROUTE"] = "route"
    post = steps.add(model_name=POSTPROCESS, model_version=1)
    post.input_map["LOGITS"] = "logits"
    if spec.release is not None:
        post.input_map["ROUTE"] = "route"
    post.output_map["PROBABILITIES"] = "PROBABILITIES"
    return config
