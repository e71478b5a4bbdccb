"""The reference WRN-28-10 through the export stage keeps its accuracy on the mirror's test split.

The export measures each artifact on the test split through its own runtime and records it in the
manifest (that figure becomes the registry's ``test_accuracy`` tag); this checks those figures
against PyTorch on the same images, within the tolerances the export itself promises: 500
class-balanced images by default, all 5,000 in a run that includes the ``full`` tests.
"""

import numpy as np
import pytest

from common.params import DataConfig, load_params
from export.onnx_io import run_onnx
from export.stage import FILES, accuracy_rows
from tests.conftest import EXPORT_SCORED, ROOT, fp32_tolerance, near_ties
from training.augment import normalize_batch

pytestmark = [pytest.mark.slow, pytest.mark.data]


def test_fp32_and_int8_onnx_keep_the_accuracy_pytorch_has_on_the_same_test_images(
    reference_export, prepared_mirror, reference_test_logits, reference_on_all
):
    export_dir, manifest, _ = reference_export
    assert all(a["passed"] for a in manifest["artifacts"]), manifest["artifacts"]
    y = np.load(prepared_mirror / "test_y.npy")
    rows = accuracy_rows(y, 0 if reference_on_all else EXPORT_SCORED)
    n = len(rows)
    measured = {a["precision"]: a["test"] for a in manifest["artifacts"]}
    assert {m["images"] for m in measured.values()} == {n}
    assert all(m["runtime"].startswith("onnxruntime ") for m in measured.values())
    logits = reference_test_logits[rows]
    torch_correct = int((logits.argmax(1) == y[rows]).sum())
    print(f"test split ({n} images): PyTorch {torch_correct / n:.4f}, " + ", ".join(
        f"ONNX {p} {m['accuracy']:.4f}" for p, m in measured.items()
    ))  # fmt: skip
    # fp32 may differ from PyTorch only on images whose two best logits lie within 2 x its tolerance.
    fragile = int(near_ties(logits, 2 * fp32_tolerance()).sum())
    assert abs(round(measured["fp32"]["accuracy"] * n) - torch_correct) <= fragile
    # int8 keeps what its gate promises (params.yaml), here on the test split too. The gate bounds the
    # expected drop; the drop seen on n images is a mean of per-image differences (-1, 0, +1) whose
    # standard error is sqrt(disagreements) / n, so the bound widens by 4.5 of those (as test_mirror).
    int8 = run_onnx(
        export_dir / FILES["int8"],
        normalize_batch(np.load(prepared_mirror / "test_x.npy")[rows], DataConfig()).numpy(),
    )
    int8_correct = int((int8.argmax(1) == y[rows]).sum())
    assert int8_correct == round(measured["int8"]["accuracy"] * n)  # the manifest's figure, rescored here
    disagreements = int((int8.argmax(1) != logits.argmax(1)).sum())
    drop = load_params(ROOT / "params.yaml").export.tolerances["int8"].max_accuracy_drop
    print(f"int8: {disagreements} of {n} top-1 answers differ from PyTorch")
    assert (torch_correct - int8_correct) / n <= drop + 4.5 * np.sqrt(max(disagreements, 1)) / n
