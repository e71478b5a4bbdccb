"""The quality reference of each exported form, computed where the form first exists.

The pipeline runs ``evaluate`` before ``export``, so the exported files do not exist yet when
``evaluate`` scores the weights; the reference is built here instead, for each artifact that passed
its gate, through the artifact's *own* runtime (ONNX Runtime, TensorRT): an int8 file's confidences
are not the fp32 file's. See :mod:`monitoring.quality_reference` for what the file holds.

The held-out split is ``monitoring.reference_split``. Weights that trained on the validation images
(the reference WRN-28-10 did) score close to 100 % there, which makes an ATC threshold meaningless;
:func:`check_held_out` refuses a validation reference whose accuracy is above the test accuracy by
more than sampling explains, and names the setting that fixes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from common.exit_codes import UsageError
from common.params import DataConfig, MonitoringConfig
from common.scored_split import accuracy_rows, balanced_subset
from monitoring.quality_reference import QualityReference, build_reference
from serving.triton.python_models.input_statistics import measure
from training.augment import normalize_batch

Runner = Callable[[np.ndarray], np.ndarray]  # normalised N x 3 x H x W -> logits


class SplitNotHeldOut(UsageError):
    """The configured reference split looks like training data for these weights (exit code 2)."""


def held_out(prepared: Path, cfg: MonitoringConfig) -> tuple[np.ndarray, np.ndarray]:
    """Uint8 images and labels of the reference split (class-balanced ``reference_images``; 0: all)."""
    if cfg.reference_split == "test":  # the rows export.accuracy_images scores, for the same count
        x, y = np.load(prepared / "test_x.npy", mmap_mode="r"), np.load(prepared / "test_y.npy")
        rows = accuracy_rows(y, cfg.reference_images)
    else:
        x, y = np.load(prepared / "val_x.npy", mmap_mode="r"), np.load(prepared / "val_y.npy")
        rows = balanced_subset(y, cfg.reference_images, seed=3)
    return np.asarray(x[rows]), y[rows]


def folder(precision: str) -> str:
    """Where a form's reference lies in the export folder (its file is ``quality_reference.json``)."""
    return f"quality/{precision}"


def file_statistics(prepared: Path, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """The input statistics of the test split's encoded files, decoded as ``preprocess`` decodes.

    Every file under ``test_images/<class>/`` is opened with PIL, converted to RGB and resized with
    the bilinear filter where it is not ``size`` already - the server's steps - then measured.
    """
    files = sorted(p for p in (prepared / "test_images").rglob("*") if p.is_file())
    if not files:
        raise UsageError(f"{prepared}/test_images holds no image files; re-run `cifar10 data prepare`")
    pixels, sizes, originals = [], [], []
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            originals.append(img.width * img.height)
            rgb = img.convert("RGB")
        if rgb.size != size:
            rgb = rgb.resize(size, resample=Image.Resampling.BILINEAR)
        pixels.append(np.asarray(rgb, dtype=np.uint8))
        sizes.append(len(data))
    return measure(np.stack(pixels).transpose(0, 3, 1, 2), np.asarray(sizes), np.asarray(originals))


def check_held_out(split: str, accuracy: float, images: int, test_accuracy: float, test_images: int) -> None:
    """Refuse a validation reference the weights have plainly seen (z = 4 two-proportion bound)."""
    if split != "validation":
        return
    pooled = (accuracy * images + test_accuracy * test_images) / (images + test_images)
    sd = math.sqrt(max(pooled * (1 - pooled), 1e-6) * (1 / images + 1 / test_images))
    if accuracy - test_accuracy > 4 * sd:
        raise SplitNotHeldOut(
            f"accuracy on the validation split is {accuracy:.2%}, on the test split {test_accuracy:.2%}: "
            "these weights trained on the validation images, so a reference calibrated there means nothing; "
            "set monitoring.reference_split: test (e.g. --set monitoring.reference_split=test)"
        )


def form_reference(
    precision: str,
    run: Runner,
    images: np.ndarray,
    labels: np.ndarray,
    statistics: np.ndarray,
    data: DataConfig,
    cfg: MonitoringConfig,
    test_accuracy: tuple[float, int] | None,
) -> QualityReference:
    """One form's reference from its own runtime's logits on the held-out images."""
    logits = run(normalize_batch(images, data).numpy())
    reference = build_reference(
        precision, logits, labels, list(data.classes), cfg.reference_split, statistics, cfg.statistic_bins
    )
    if test_accuracy is not None:
        check_held_out(cfg.reference_split, reference.accuracy, reference.images, *test_accuracy)
    return reference
