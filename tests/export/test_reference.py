"""The reference WRN-28-10 through the export stage keeps its accuracy on the mirror's test split."""

import numpy as np
import pytest

from common.config import DataConfig
from export import onnx_io
from training.augment import normalize_batch

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _accuracy(path, x, y) -> float:
    logits = onnx_io.run_onnx(path, x, batch_size=250)
    return float(np.mean(logits.argmax(1) == y))


def test_fp32_and_int8_onnx_keep_accuracy_on_5000_test_images(
    reference_export, prepared_mirror, reference_test_logits
):
    folder, manifest, _ = reference_export
    assert all(a["passed"] for a in manifest["artifacts"]), manifest["artifacts"]
    y = np.load(prepared_mirror / "test_y.npy")
    x = normalize_batch(np.load(prepared_mirror / "test_x.npy"), DataConfig()).numpy()
    acc_torch = float(np.mean(reference_test_logits.argmax(1) == y))
    acc_fp32 = _accuracy(folder / "model.fp32.onnx", x, y)
    acc_int8 = _accuracy(folder / "model.int8.onnx", x, y)
    print(f"test split: PyTorch {acc_torch:.4f}, ONNX fp32 {acc_fp32:.4f}, ONNX int8 {acc_int8:.4f}")
    assert acc_torch >= 0.93
    assert abs(acc_fp32 - acc_torch) <= 0.001
    assert acc_int8 >= acc_torch - 0.005
