"""Encoded PNG/JPEG bytes -> the normalised ``N x 3 x H x W`` float32 batch a classifier takes.

The one implementation of the public contract's input side. Three callers share this file, each
importing it as a sibling module, so it imports only the stdlib, numpy and PIL:

* the served ``preprocess`` python model and the release router (``serving/repository/build.py``
  ships this file beside them; the stub puts their version folder on ``sys.path``);
* the registered versions' MLflow pyfunc (``mlmodel.image_classifier``), which carries this file in
  its ``code/`` folder, so ``mlflow.pyfunc.load_model`` decodes exactly as Triton does.

Limits (``max_bytes`` per encoded image, ``max_pixels`` per decoded image) are checked before
decoding, so a decompression bomb or an oversized upload costs one error, not the process's memory.

Resizing: images that are not already ``H x W`` are resized with PIL's bilinear filter, which
widens its support when shrinking (i.e. it antialiases). That matches what ``torchvision``'s
``Resize(antialias=True)`` does on PIL images, and CIFAR-sized inputs pass through untouched. Only
PNG and JPEG are decoded; PIL's other format plugins are not reachable from the network.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
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


def _floats(params: dict, key: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in params[key]["string_value"].split(","))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"preprocess: config parameter {key!r} must be 3 comma-separated floats") from exc
    if len(values) != 3:
        raise ValueError(f"preprocess: config parameter {key!r} needs 3 values, got {list(values)}")
    return values


class Decoder:
    """Encoded files -> normalised ``N x 3 x H x W`` float32 (``size`` is ``(width, height)``)."""

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        size: tuple[int, int],
        resample: str = "bilinear",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {list(mean)} and {list(std)}")
        if resample not in RESAMPLE:
            raise ValueError(f"preprocess: resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        self.resample = RESAMPLE[resample]
        self.max_pixels, self.max_bytes = int(max_pixels), int(max_bytes)
        self.size = size

    @classmethod
    def from_config(cls, params: dict, size: tuple[int, int]) -> Decoder:
        """From a Triton ``config.pbtxt``'s parameters (``{"mean": {"string_value": "..."}}``)."""

        def value(key: str, default: str) -> str:
            return params.get(key, {}).get("string_value", "") or default

        return cls(
            _floats(params, "mean"),
            _floats(params, "std"),
            size,
            value("resample", "bilinear"),
            int(value("max_pixels", str(DEFAULT_MAX_PIXELS))),
            int(value("max_bytes", str(DEFAULT_MAX_BYTES))),
        )

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
            if not isinstance(blob, bytes | bytearray | memoryview | np.bytes_):
                raise InvalidImage(f"image {i} of the request is {type(blob).__name__}, not encoded bytes")
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
