"""Common corruptions in the style of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), seeded.

Why here: the label-free accuracy estimate and the input-drift alerts (:mod:`monitoring.quality`)
must be tried on shifted data whose true accuracy is known. CIFAR-10-C itself is a 2.9 GB download
this project's machines cannot reach, so the shifts are rebuilt from any labelled test split: six
kinds, three severities each (``mild``, ``medium``, ``strong``), every random draw from a generator
seeded by ``(seed, kind, severity)``, so the same input gives the same bytes on any machine.

The parameters follow CIFAR-10-C's severities 1, 3 and 5 where that paper's kind is the same
(Gaussian noise, contrast, brightness, JPEG, pixelate); the blur is a plain Gaussian blur. What a
corruption returns is *encoded* (PNG, or JPEG for the JPEG kind), because that is what a client
sends and what the server's ``preprocess`` decodes: the serving path sees the same bytes. A corrupted
image is encoded the way its source files are (:func:`encoding_of`: PNG, or JPEG at the quality the
source used), so the file format itself is not a shift; only the JPEG kind changes the encoding.
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SEVERITIES = ("mild", "medium", "strong")

# kind -> (parameter per severity). Chosen from CIFAR-10-C's severities 1, 3 and 5.
PARAMETERS: dict[str, tuple[float, float, float]] = {
    "gaussian_noise": (0.04, 0.08, 0.10),  # sigma, on [0, 1] pixels
    "blur": (0.5, 1.0, 1.5),  # Gaussian radius (sigma) in pixels
    "contrast": (0.75, 0.4, 0.15),  # factor towards the image's mean
    "brightness": (0.1, 0.3, 0.5),  # added to HSV value
    "jpeg": (60, 40, 20),  # JPEG quality (the mirror's own files are quality 75)
    "pixelate": (0.75, 0.5, 0.35),  # downscale factor before scaling back up (box filter)
}
KINDS = tuple(PARAMETERS)


def _noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    return np.clip(x + rng.normal(0.0, sigma, x.shape), 0, 1) * 255.0


def _blur(img: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)


def _contrast(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * factor + mean


def _brightness(img: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(img).convert("HSV"), dtype=np.float32)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift * 255.0, 0, 255)
    return np.asarray(Image.fromarray(hsv.round().astype(np.uint8), "HSV").convert("RGB"), dtype=np.float32)


def _pixelate(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX), dtype=np.float32)


PIXEL_OPS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _noise,
    "blur": _blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
}


Encoding = tuple[str, int]  # ("PNG", 0) or ("JPEG", quality)
PNG: Encoding = ("PNG", 0)


def _tables(data: bytes) -> list[int] | None:
    with Image.open(io.BytesIO(data)) as img:
        tables = getattr(img, "quantization", None)
        return list(tables[0]) if tables else None


@functools.cache
def _table_by_quality() -> dict[int, list[int]]:
    blank = Image.new("RGB", (8, 8))
    out = {}
    for quality in range(1, 101):
        buf = io.BytesIO()
        blank.save(buf, format="JPEG", quality=quality)
        out[quality] = _tables(buf.getvalue()) or []
    return out


def encoding_of(files: list[bytes]) -> Encoding:
    """How source files are encoded: PNG, or JPEG with the IJG quality whose luminance table is
    nearest to the first file's (what Pillow writes for that quality)."""
    if not files or not files[0].startswith(b"\xff\xd8"):
        return PNG
    table = _tables(files[0])
    if not table:
        return PNG
    best = min(
        _table_by_quality().items(),
        key=lambda kv: sum(abs(a - b) for a, b in zip(kv[1], table, strict=False)),
    )
    return ("JPEG", best[0])


def _encode(pixels: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))
    if fmt == "JPEG":
        image.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def rng_for(seed: int, kind: str, severity: str) -> np.random.Generator:
    """The generator of one corrupted set: the same (seed, kind, severity) draws the same noise."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), SEVERITIES.index(severity)])


def corrupt(
    images: np.ndarray, kind: str, severity: str, seed: int = 0, encoding: Encoding = PNG
) -> list[bytes]:
    """Uint8 ``N x H x W x 3`` RGB images -> the encoded files of their corrupted copies.

    ``encoding``: how every kind but ``jpeg`` is written (:func:`encoding_of` the source files).
    """
    if kind not in PARAMETERS:
        raise ValueError(f"unknown corruption {kind!r}; choose from {', '.join(KINDS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; choose from {', '.join(SEVERITIES)}")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 N x H x W x 3 images, got {images.dtype} {list(images.shape)}")
    value = PARAMETERS[kind][SEVERITIES.index(severity)]
    if kind == "jpeg":
        return [_encode(img, "JPEG", quality=int(value)) for img in images]
    rng = rng_for(seed, kind, severity)
    fmt, quality = encoding
    return [_encode(PIXEL_OPS[kind](img, value, rng), fmt, quality) for img in images]


def decode(files: list[bytes]) -> np.ndarray:
    """Encoded files -> uint8 ``N x H x W x 3`` RGB (what the server's decoder sees)."""
    return np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB"), dtype=np.uint8) for f in files])


def write_folder(
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    out: Path,
    kind: str,
    severity: str,
    seed: int,
    encoding: Encoding = PNG,
) -> int:
    """One corrupted set as an image folder ``out/<kind>-<severity>/<class>/<index>.<png|jpg>``.

    That is the layout ``cifar10 client evaluate`` reads, so a shifted set is scored through the
    served ``cifar10`` endpoint like any other folder. Returns the number of files written.
    """
    files = corrupt(images, kind, severity, seed, encoding)
    suffix = "jpg" if kind == "jpeg" or encoding[0] == "JPEG" else "png"
    root = out / f"{kind}-{severity}"
    for i, (data, label) in enumerate(zip(files, labels, strict=True)):
        folder = root / classes[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.{suffix}").write_bytes(data)
    return len(files)
