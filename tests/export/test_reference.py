"""The reference WRN-28-10 through the export stage keeps its accuracy on the mirror's test split.

The export measures each artifact on the test split through its own runtime and records it in the
manifest (that figure becomes the registry's ``test_accuracy`` tag); this checks those figures
against PyTorch on the same 5,000 images, within the tolerances the export itself promises.
"""

import numpy as np
import pytest

from common.params import load_params
from tests.conftest import ROOT, fp32_tolerance, near_ties

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_fp32_and_int8_onnx_keep_accuracy_on_5000_test_images(
    reference_export, prepared_mirror, reference_test_logits
):
    _, manifest, _ = reference_export
    assert all(a["passed"] for a in manifest["artifacts"]), manifest["artifacts"]
    y = np.load(prepared_mirror / "test_y.npy")
    measured = {a["precision"]: a["test"] for a in manifest["artifacts"]}
    assert {m["images"] for m in measured.values()} == {5000}
    assert all(m["runtime"].startswith("onnxruntime ") for m in measured.values())
    torch_correct = int((reference_test_logits.argmax(1) == y).sum())
    print(f"test split: PyTorch {torch_correct / 5000:.4f}, " + ", ".join(
        f"ONNX {p} {m['accuracy']:.4f}" for p, m in measured.items()
    ))  # fmt: skip
    # fp32 may differ from PyTorch only on images whose two best logits lie within 2 x its tolerance.
    fragile = int(near_ties(reference_test_logits, 2 * fp32_tolerance()).sum())
    assert abs(round(measured["fp32"]["accuracy"] * 5000) - torch_correct) <= fragile
    # int8 keeps what its gate promises (params.yaml), here on the test split too.
    drop = load_params(ROOT / "params.yaml").export.tolerances["int8"].max_accuracy_drop
    assert measured["int8"]["accuracy"] >= torch_correct / 5000 - drop
