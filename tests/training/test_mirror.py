"""Data checks on the offline CIFAR-10 mirror, run through the project's own prepare stage."""

import json

import numpy as np
import pytest

from tests.conftest import CLASSES

pytestmark = pytest.mark.data


def test_counts_classes_and_shapes(prepared_mirror):
    meta = json.loads((prepared_mirror / "meta.json").read_text())
    assert meta["classes"] == list(CLASSES)
    assert meta["counts"] == {"train": 45_000, "val": 5_000, "test": 5_000}
    for split, n in meta["counts"].items():
        x, y = np.load(prepared_mirror / f"{split}_x.npy"), np.load(prepared_mirror / f"{split}_y.npy")
        assert x.shape == (n, 32, 32, 3) and x.dtype == np.uint8
        assert y.shape == (n,) and set(np.unique(y)) == set(range(10))
    assert np.bincount(np.load(prepared_mirror / "test_y.npy")).tolist() == [500] * 10
    assert np.bincount(np.load(prepared_mirror / "val_y.npy")).tolist() == [500] * 10


def test_images_are_real_pictures_not_constant_arrays(prepared_mirror):
    x = np.load(prepared_mirror / "test_x.npy", mmap_mode="r")[:500]
    assert 80 < x.mean() < 170 and x.std() > 40
    assert len({img.tobytes() for img in x}) == 500


def test_test_image_folder_matches_the_arrays(prepared_mirror):
    files = sorted((prepared_mirror / "test_images").rglob("*.jpg"))
    assert len(files) == 5_000
    assert sorted({f.parent.name for f in files}) == list(CLASSES)


# What ../shared/notes/reference-model.md documents: 93.24 % without TTA, i.e. 4,662 of 5,000.
DOCUMENTED_CORRECT = 4_662


@pytest.mark.slow
def test_reference_weights_score_what_is_documented(prepared_mirror, reference_test_logits, reference_rows):
    """The project's model and inference code on the mirror's test split, no TTA.

    On all 5,000 images (a run with the ``full`` tests): another CPU's fp32 kernels move a logit by
    far less than 1e-3 (PyTorch against ONNX Runtime here: 3e-6), so they can flip only predictions
    whose two best logits lie within 2e-3; the count of correct answers may differ from the
    documented one by at most that many images, on any machine.

    On the default run's part of the split, the documented figure is a rate, and the count on ``n``
    images is binomial around it: the check allows 4.5 standard deviations (a false alarm about once
    in 150,000 runs), which still catches any real breakage of decoding, normalisation or layout
    (those cost tens of points, not one or two).
    """
    from common.metrics import classification_summary
    from common.params import DataConfig
    from tests.conftest import fp32_tolerance, near_ties

    y = np.load(prepared_mirror / "test_y.npy")[reference_rows]
    logits = reference_test_logits[reference_rows]
    n = len(y)
    summary = classification_summary(y, logits.argmax(1), list(DataConfig().classes))
    assert summary["tested_samples"] == n
    correct = int((logits.argmax(1) == y).sum())
    if n == 5_000:
        fragile = int(near_ties(logits, 2 * fp32_tolerance()).sum())
        assert abs(correct - DOCUMENTED_CORRECT) <= fragile, (correct, fragile)
        # The weakest class (cat) sits near 85 % recall: 500 images each, far from this floor.
        assert min(row["recall"] for row in summary["per_class"].values()) > 0.8
    else:
        p = DOCUMENTED_CORRECT / 5_000
        assert abs(correct - p * n) <= 4.5 * np.sqrt(n * p * (1 - p)), (correct, n)
