"""Triton python model: encoded PNG/JPEG bytes -> normalised ``3 x H x W`` float32 tensor.

Runs inside Triton's python backend stub, so it imports only the stdlib, numpy, PIL and
``triton_python_backend_utils`` - never the project's packages. It is copied to
``<repository>/preprocess/1/model.py`` by :mod:`serving.repository.build`.

Input ``IMAGE`` is ``BYTES [batch, 1]``: one encoded file per batch element, any sizes mixed in one
request (Triton's common image protocol).

Limits (``max_bytes`` per encoded image, ``max_pixels`` per decoded image; config parameters written
from ``params.yaml``'s ``serving`` section) are checked before decoding, so a decompression bomb or
an oversized upload costs one error response, not the stub's memory.

Resizing: images that are not already ``H x W`` are resized with PIL's bilinear filter, which
widens its support when shrinking (i.e. it antialiases). That matches what ``torchvision``'s
``Resize(antialias=True)`` does on PIL images, and CIFAR-sized inputs pass through untouched.

A request whose bytes do not decode gets its own INVALID_ARG error response; the other requests of the
same dynamic batch are answered normally. Only PNG and JPEG are decoded; PIL's other format plugins
are not reachable from the network.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import NamedTuple

import numpy as np
import triton_python_backend_utils as pb_utils
from PIL import Image, UnidentifiedImageError

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_BYTES = 1 << 20
# Only the formats clients are told to send: every other PIL decoder is attack surface we do not need.
FORMATS = ("PNG", "JPEG")
BOMBS = (Image.DecompressionBombWarning, Image.DecompressionBombError)


class Decoded(NamedTuple):
    """What one request's images were before normalising: the input statistics measure these."""

    pixels: np.ndarray  # uint8 N x 3 x H x W (planar), model-sized
    encoded_bytes: np.ndarray
    original_pixels: np.ndarray


class InvalidImage(ValueError):
    """Client error: the bytes are not a decodable image of acceptable size."""


def _floats(params: dict, key: str) -> np.ndarray:
    try:
        values = [float(x) for x in params[key]["string_value"].split(",")]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"preprocess: config parameter {key!r} must be 3 comma-separated floats") from exc
    if len(values) != 3:
        raise ValueError(f"preprocess: config parameter {key!r} needs 3 values, got {values}")
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


def decode(data: bytes, size: tuple[int, int], resample: int, max_pixels: int) -> tuple[np.ndarray, int]:
    """One encoded file -> ``H x W x 3`` uint8 RGB and its pixels as sent, or :class:`InvalidImage`."""
    if not data:
        raise InvalidImage("is empty (no image bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                if img.width * img.height > max_pixels:
                    raise InvalidImage(f"is too large ({img.width}x{img.height} > {max_pixels} pixels)")
                img.load()
                original = img.width * img.height
                rgb = img.convert("RGB")
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise InvalidImage("is not a PNG or JPEG file (unrecognised bytes)") from None
    except BOMBS as exc:
        raise InvalidImage(f"is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"could not be decoded as PNG/JPEG ({exc})") from None
    if rgb.size != size:
        rgb = rgb.resize(size, resample=resample)
    return np.asarray(rgb, dtype=np.uint8), original


class Decoder:
    """Encoded files -> normalised ``N x 3 x H x W`` float32, configured from config parameters.

    Shared with the release router (``router.py``), which decodes the ensemble's images itself so
    that routing adds no extra python step to the path.
    """

    def __init__(self, params: dict, size: tuple[int, int]) -> None:
        self.mean = _floats(params, "mean")
        self.std = _floats(params, "std")
        resample = params.get("resample", {}).get("string_value", "bilinear")
        if resample not in RESAMPLE:
            raise ValueError(f"preprocess: resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        self.resample = RESAMPLE[resample]
        max_pixels = params.get("max_pixels", {}).get("string_value", "")
        self.max_pixels = int(max_pixels) if max_pixels else DEFAULT_MAX_PIXELS
        max_bytes = params.get("max_bytes", {}).get("string_value", "")
        self.max_bytes = int(max_bytes) if max_bytes else DEFAULT_MAX_BYTES
        self.size = size  # (width, height)

    def batch(self, batch: np.ndarray) -> np.ndarray:
        """``BYTES [n, 1]`` -> ``[n, 3, H, W]``; :class:`InvalidImage` names the first bad image."""
        return self.decoded(batch)[0]

    def decoded(self, batch: np.ndarray) -> tuple[np.ndarray, Decoded]:
        """:meth:`batch` plus what the input statistics need: uint8 pixels, file sizes, sizes as sent."""
        if batch.ndim != 2 or batch.shape[1] != 1:
            raise InvalidImage(f"IMAGE must be BYTES [batch, 1], got shape {list(batch.shape)}")
        images = np.empty((len(batch), 3, self.size[1], self.size[0]), dtype=np.uint8)
        sizes = np.empty(len(batch), dtype=np.int64)
        originals = np.empty(len(batch), dtype=np.int64)
        for i, (blob,) in enumerate(batch):
            data = bytes(blob)
            if len(data) > self.max_bytes:
                raise InvalidImage(
                    f"image {i} of the request is {len(data)} bytes, more than the {self.max_bytes} allowed"
                )
            try:
                pixels, originals[i] = decode(data, self.size, self.resample, self.max_pixels)
            except InvalidImage as exc:
                raise InvalidImage(f"image {i} of the request {exc}") from None
            images[i] = pixels.transpose(2, 0, 1)
            sizes[i] = len(data)
        normalised = ((images / np.float32(255.0) - self.mean) / self.std).astype(np.float32)
        return normalised, Decoded(images, sizes, originals)


class TritonPythonModel:
    """Decode, resize, scale to [0, 1] and normalise with the dataset mean/std from the config."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        out = pb_utils.get_output_config_by_name(config, "INPUT")
        channels, height, width = (int(d) for d in out["dims"])
        if channels != 3:
            raise ValueError(f"preprocess: output INPUT must have 3 channels, config says {out['dims']}")
        params = config.get("parameters", {})
        self.decoder = Decoder(params, (width, height))
        self.statistics = statistic_counter(params, args["model_repository"])

    def _one(self, request, counted: list) -> pb_utils.InferenceResponse:
        images, decoded = self.decoder.decoded(pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy())
        uncounted = pb_utils.get_input_tensor_by_name(request, "UNCOUNTED")  # warm-up samples only
        if uncounted is None:
            counted.append(decoded)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("INPUT", images)])

    def execute(self, requests: list) -> list:
        responses, counted = [], []
        for request in requests:
            try:
                responses.append(self._one(request, counted))
            except InvalidImage as exc:
                error = pb_utils.TritonError(f"preprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            except Exception as exc:  # one broken request must not fail the whole batch
                error = pb_utils.TritonError(
                    f"preprocess: internal error: {exc!r}", pb_utils.TritonError.INTERNAL
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        if self.statistics is not None:  # queued: measured off the request path (quality_metrics.py)
            for decoded in counted:
                self.statistics[1].count(*decoded)
        return responses

    def finalize(self) -> None:
        if self.statistics is not None:
            self.statistics[0].close()


def statistic_counter(params: dict, model_folder: str):
    """The (flusher, counter) of the version this model's statistics are labelled with, or ``None``.

    ``quality_model``/``quality_version`` name it (production's classifier); without its reference
    (``quality/<model>/<version>.json``) or with ``quality_metrics`` false nothing is counted.
    """
    enabled = params.get("quality_metrics", {}).get("string_value", "false") == "true"
    if not (enabled and os.path.isdir(os.path.join(model_folder, "quality"))):
        return None  # sync shipped no reference: nothing to count against
    from quality_metrics import Flusher, StatisticCounter, load_reference

    model = params.get("quality_model", {}).get("string_value", "")
    version = params.get("quality_version", {}).get("string_value", "")
    reference = load_reference(model_folder, model, version) if enabled and model else None
    if reference is None:
        return None
    flusher = Flusher(float(params.get("metrics_flush_s", {}).get("string_value", "1.0")))
    return flusher, StatisticCounter(reference, {"model": model, "version": version}, flusher)
