"""What the client sends: image discovery, validation, and the client-side preprocessing.

The tensor path reproduces the server's ``preprocess`` model exactly (PIL decode, RGB, bilinear
resize to 32x32 only when needed, ``(x/255 - mean)/std``), so ``--mode bytes`` and ``--mode tensor``
give the same predictions and either can be used to cross-check the other.
"""

from __future__ import annotations

import io
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from client.core.errors import BadInput

log = logging.getLogger(__name__)
IMAGE_SIZE = (32, 32)
SERVER_FORMATS = ("PNG", "JPEG")  # what the ensemble's preprocess model decodes
# The serving defaults (params.yaml serving.max_image_*): a file the server would refuse is
# reported here without being sent, and without reading more of it than the limit.
MAX_IMAGE_BYTES = 1 << 20
MAX_IMAGE_PIXELS = 4096 * 4096


class UnreadableImage(ValueError):
    """A file that is not a decodable image; the client skips it and reports the reason."""


@dataclass(frozen=True)
class ImageItem:
    """One unit of work: a file (or in-memory synthetic image) and its true label if known."""

    path: str
    label: str | None = None
    data: bytes | None = None

    def read(self, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        """The encoded bytes; :class:`UnreadableImage` above ``max_bytes`` (checked before reading)."""
        size = len(self.data) if self.data is not None else Path(self.path).stat().st_size
        if size > max_bytes:
            raise UnreadableImage(f"too large: {size:,} bytes > {max_bytes:,} allowed per image")
        return self.data if self.data is not None else Path(self.path).read_bytes()


def discover(
    root: Path,
    classes: tuple[str, ...] | None = None,
    limit: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> list[ImageItem]:
    """Every file under ``root``: ``<root>/<class>/...`` labelled, files directly in ``root`` unlabelled.

    Files are not filtered by extension: a file that is not an image is reported as skipped later,
    which is more useful than silently ignoring it. With ``classes``, every subfolder must be one of
    them; without, any subfolder name is a label (checked against the served classes later).
    ``per_class`` keeps the first N files (sorted) of each class; ``limit`` then draws a seeded
    random sample, so a run is reproducible.
    """
    root = Path(root)
    if not root.is_dir():
        raise BadInput(f"image folder not found: {root}")
    by_label: dict[str | None, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if classes is not None and entry.name not in classes:
                raise BadInput(f"{entry} is not a class folder (expected one of {', '.join(classes)})")
            files = sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith("."))
            by_label[entry.name] = files
        elif entry.is_file():
            by_label.setdefault(None, []).append(entry)
    if per_class is not None:
        if per_class < 1:
            raise BadInput(f"--per-class must be >= 1, got {per_class}")
        for label, files in by_label.items():
            if label is not None and len(files) < per_class:
                log.warning("class %s has only %d files (asked for %d)", label, len(files), per_class)
            by_label[label] = files[:per_class] if label is not None else files
    items = [ImageItem(str(p), label) for label, files in by_label.items() for p in files]
    if not items:
        raise BadInput(f"no files found under {root}")
    return sample(items, limit, seed)


def sample(items: list[ImageItem], limit: int | None, seed: int) -> list[ImageItem]:
    """A seeded random subset of ``limit`` items, kept in their original order."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise BadInput(f"--limit must be >= 1, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def synthetic(n: int, seed: int = 0, size: tuple[int, int] = IMAGE_SIZE) -> list[ImageItem]:
    """``n`` random-noise PNGs in memory: load without a dataset (predictions are meaningless)."""
    if n < 1:
        raise BadInput(f"--random must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
        items.append(ImageItem(f"random://{i:06d}.png", None, buf.getvalue()))
    return items


def decode(
    data: bytes, formats: tuple[str, ...] | None = None, max_pixels: int = MAX_IMAGE_PIXELS
) -> Image.Image:
    """Fully decode ``data`` (so truncated files fail here, not on the server) as an RGB image.

    The pixel count is checked from the header first, so a decompression bomb is never decoded.
    """
    if not data:
        raise UnreadableImage("empty file")
    try:
        with Image.open(io.BytesIO(data), formats=formats) as img:
            if img.width * img.height > max_pixels:
                raise UnreadableImage(
                    f"too large: {img.width}x{img.height} pixels > {max_pixels:,} allowed per image"
                )
            img.load()
            return img.convert("RGB")
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as exc:  # open() itself refuses beyond PIL's own limit
        raise UnreadableImage(f"too large: {exc}") from None
    except UnidentifiedImageError:
        allowed = f"a {'/'.join(formats)}" if formats else "an"
        raise UnreadableImage(f"not {allowed} image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"cannot decode image: {exc}") from None


def check_encoded(data: bytes) -> None:
    """Raise :class:`UnreadableImage` unless ``data`` is a PNG/JPEG the server's preprocess accepts."""
    decode(data, SERVER_FORMATS)


def to_tensor(
    data: bytes,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    size: tuple[int, int] = IMAGE_SIZE,
) -> np.ndarray:
    """Encoded image -> normalised ``3 x H x W`` float32, the classifier's input layout."""
    rgb = decode(data)
    if rgb.size != size:
        rgb = rgb.resize(size, resample=Image.Resampling.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return ((x - m) / s).astype(np.float32)


def softmax_topk(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` class indices and softmax probabilities of one logit vector, as the server ranks them."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-z, kind="stable")[:k]
    return order, p[order].astype(np.float32)
