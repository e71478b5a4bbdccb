"""Which test images a version's accuracy was measured on, and a digest that names exactly them.

A gate that compares two accuracies must know they were measured on the same images with the same
labels. The export stage scores a class-balanced, seeded part of the prepared test split
(:func:`accuracy_rows`) and records :func:`digest` of those rows with the figure; the release gate
compares digests, and where they differ scores production itself on the candidate's rows, found again
from the same prepared folder by the same selection. numpy only: the gate runs without torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np


class ScoredRows(NamedTuple):
    images: np.ndarray  # uint8 N x H x W x 3
    labels: np.ndarray  # int64 class indices


ACCURACY_SEED = 2  # the seed of the test rows each artifact is scored on (see accuracy_rows)


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` images with (as near as possible) equal counts per class; 0 means all."""
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = n // len(classes)
    picks = [rng.choice(np.flatnonzero(labels == c), size=per, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def accuracy_rows(test_y: np.ndarray, n: int) -> np.ndarray:
    """Rows of the test split each artifact is scored on: ``n`` class-balanced ones, seeded (0: all)."""
    return balanced_subset(test_y, n, seed=ACCURACY_SEED)


def digest(images: np.ndarray, labels: np.ndarray, classes: list[str] | tuple[str, ...]) -> str:
    """16 hex digits over the exact pixels, labels and class names of a scored set."""
    h = hashlib.sha256()
    h.update("\n".join(classes).encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:16]


def load_rows(prepared: Path, n: int) -> ScoredRows:
    """The uint8 NHWC images and labels of the ``n`` scored test rows of a prepared folder."""
    test_x = np.load(prepared / "test_x.npy", mmap_mode="r")
    test_y = np.load(prepared / "test_y.npy")
    pick = accuracy_rows(test_y, n)
    return ScoredRows(np.asarray(test_x[pick]), test_y[pick])


def normalise(images: np.ndarray, mean, std) -> np.ndarray:
    """uint8 N×H×W×3 -> float32 N×3×H×W, ``(pixel/255 - mean)/std``: every exported model's input."""
    x = np.ascontiguousarray(images, dtype=np.float32).transpose(0, 3, 1, 2) / 255.0
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return ((x - m) / s).astype(np.float32)


def class_precision(predicted: np.ndarray, labels: np.ndarray, classes) -> dict[str, float]:
    """For each class a model predicted: the share of those predictions that were right."""
    out = {}
    for index, name in enumerate(classes):
        mine = predicted == index
        if mine.any():
            out[name] = round(float(np.mean(labels[mine] == index)), 4)
    return out
