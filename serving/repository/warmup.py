"""``model_warmup`` samples, so a newly loaded version answers at steady latency from its first request.

Triton runs a model's warm-up samples while loading it and marks the version ready only after they
answered. Without them the first requests after every rollout pay for lazy initialisation (ONNX
Runtime's first-run allocations and kernel choices, TensorRT's engine build through ONNX Runtime, the
python stub's first decode), which puts cold requests into the tail exactly when a new version
starts serving.

* Classifiers: one sample per batch size the dynamic batcher prefers, plus batch 1 (the low-load
  path), zero tensors of the served shape.
* ``preprocess``: a real encoded image (a JPEG built here, deterministic), so the decoder, not only
  the tensor plumbing, is warm.
* ``postprocess``: zero logits with ``ROUTE`` -1, which postprocess answers without counting, so
  warm-up never shows in ``predicted_class_total`` (the drift signal).
* The release ``router`` gets none: its BLS calls would feed the release's own shadow metrics, and
  it decodes and calls classifiers that are already warm.

Triton reads a sample's file from the model's ``warmup/`` folder; one file holds one batch element
(Triton builds ``batch_size`` requests of it). A ``TYPE_STRING`` element is a 4-byte little-endian
length followed by the bytes.
"""

from __future__ import annotations

import io
import struct

from tritonclient.grpc import model_config_pb2 as mc

from serving.repository.spec import POSTPROCESS, PREPROCESS, RepositorySpec, ServedModel

WARMUP_DIR = "warmup"
IMAGE_FILE = "image.jpg.bytes"
ROUTE_FILE = "route_minus_one.int32"
FLAG_FILE = "true.bool"


def batch_sizes(preferred: tuple[int, ...], max_batch_size: int, limit: int = 0) -> list[int]:
    """Batch 1 and every preferred size the model accepts (up to ``limit`` if set), ascending."""
    top = min(max_batch_size, limit) if limit > 0 else max_batch_size
    return sorted({1, *(b for b in preferred if 1 <= b <= top)})


def _sample(name: str, batch: int, inputs: dict[str, mc.ModelWarmup.Input]) -> mc.ModelWarmup:
    sample = mc.ModelWarmup(name=name, batch_size=batch, count=1)
    for key, value in inputs.items():
        sample.inputs[key].CopyFrom(value)
    return sample


def _zeros(data_type: int, dims: list[int]) -> mc.ModelWarmup.Input:
    """Zeros, not ``random_data``: Triton fills that with random *bytes*, which as FP32 include NaN
    and Inf (postprocess rightly refuses non-finite logits, and the load would fail at random)."""
    return mc.ModelWarmup.Input(data_type=data_type, dims=dims, zero_data=True)


def _file(data_type: int, dims: list[int], name: str) -> mc.ModelWarmup.Input:
    return mc.ModelWarmup.Input(data_type=data_type, dims=dims, input_data_file=name)


def classifier_samples(model: ServedModel, dims: list[int], limit: int = 0) -> list[mc.ModelWarmup]:
    inputs = {model.input_name: _zeros(mc.TYPE_FP32, dims)}
    return [
        _sample(f"batch_{b}", b, inputs)
        for b in batch_sizes(model.preferred_batch_sizes, model.max_batch_size, limit)
    ]


def preprocess_samples(spec: RepositorySpec) -> list[mc.ModelWarmup]:
    # UNCOUNTED (optional, sent by no client): the warm-up image stays out of the input statistics.
    inputs = {
        "IMAGE": _file(mc.TYPE_STRING, [1], IMAGE_FILE),
        "UNCOUNTED": _file(mc.TYPE_BOOL, [1], FLAG_FILE),
    }
    sizes = batch_sizes(spec.target.preferred_batch_sizes, spec.preprocess_max_batch, spec.warmup_max_batch)
    return [_sample(f"jpeg_batch_{b}", b, inputs) for b in sizes]


def postprocess_samples(spec: RepositorySpec) -> list[mc.ModelWarmup]:
    inputs = {
        "LOGITS": _zeros(mc.TYPE_FP32, [len(spec.classes)]),
        "ROUTE": _file(mc.TYPE_INT32, [1], ROUTE_FILE),
    }
    sizes = batch_sizes(spec.target.preferred_batch_sizes, spec.postprocess_max_batch, spec.warmup_max_batch)
    return [_sample(f"uncounted_batch_{b}", b, inputs) for b in sizes]


def sample_jpeg(size: int = 32) -> bytes:
    """A smooth colour gradient as a baseline JPEG: the bytes depend only on Pillow's encoder."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 255 - ramp[None, :]), axis=-1)
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), "RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def warmup_files(spec: RepositorySpec) -> dict[str, bytes]:
    """Relative path -> bytes of the files the python models' samples read."""
    if not spec.warmup:
        return {}
    image = sample_jpeg()
    return {
        f"{PREPROCESS}/{WARMUP_DIR}/{IMAGE_FILE}": struct.pack("<I", len(image)) + image,
        f"{PREPROCESS}/{WARMUP_DIR}/{FLAG_FILE}": b"\x01",
        f"{POSTPROCESS}/{WARMUP_DIR}/{ROUTE_FILE}": struct.pack("<i", -1),
    }
