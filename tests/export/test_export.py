"""Export of a small WideResNet on CPU: every precision, the parity gate, metadata and bad input."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from common.params import DataConfig, ExportConfig, Tolerance, load_params
from export import onnx_io, tensorrt_engine
from export.parity import compare
from export.stage import ExportError, export_model
from training.checkpoint import WeightsError, model_metadata, save_weights
from training.model import WideResNet

DATA = DataConfig(val_per_class=4)


@pytest.fixture(scope="module")
def prepared(small_prepared) -> Path:
    return small_prepared


@pytest.fixture(scope="module")
def weights(small_weights) -> Path:
    return small_weights


@pytest.fixture
def mlflow_store(isolated_mlflow):
    return isolated_mlflow


def _cfg(**kw) -> ExportConfig:
    return ExportConfig(**({"parity_images": 40, "calibration_images": 64, "max_batch": 64} | kw))


def test_every_precision_exports_and_passes(weights, prepared, tmp_path, mlflow_store):
    out = tmp_path / "export"
    manifest = export_model(weights, prepared, DATA, _cfg(), out, command="pytest").model_dump(mode="json")
    by = {a["precision"]: a for a in manifest["artifacts"]}
    assert set(by) == {"fp32", "fp16", "int8"}
    assert by["fp32"]["passed"] and by["fp32"]["parity"]["max_abs_logit"] <= 1e-3
    assert by["fp32"]["parity"]["top1_agreement"] == 1.0
    assert by["fp16"]["passed"], by["fp16"]["parity"]
    for art in manifest["artifacts"]:
        assert (out / art["file"]).exists()
    if tensorrt_engine.availability() is not None:
        assert "trt_fp16" in manifest["skipped"] and "skipped" in manifest["skipped"]["trt_fp16"]
    assert "reproduce with: pytest" in (out / "parity.txt").read_text()
    assert json.loads((out / "manifest.json").read_text())["mlflow_run_id"]


def test_onnx_has_dynamic_batch_names_and_metadata(weights, prepared, tmp_path, mlflow_store):
    out = tmp_path / "e"
    export_model(weights, prepared, DATA, _cfg(precisions=("fp32",)), out)
    proto = onnx.load(str(out / "model.fp32.onnx"))
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == [
        "logits"
    ]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = onnx_io.read_metadata(out / "model.fp32.onnx")
    assert json.loads(meta["classes"])[0] == "airplane" and json.loads(meta["parity"])["passed"] is True
    assert {"mean", "std", "input_layout", "source_run_id", "git_commit"} <= set(meta)
    sess = onnx_io.session(out / "model.fp32.onnx")
    for n in (1, 5, 64):
        assert sess.run(None, {"input": np.zeros((n, 3, 32, 32), np.float32)})[0].shape == (n, 10)


def test_fp16_onnx_computes_in_half_precision(weights, prepared, tmp_path, mlflow_store):
    out = tmp_path / "h"
    export_model(weights, prepared, DATA, _cfg(precisions=("fp32", "fp16")), out)
    proto = onnx.load(str(out / "model.fp16.onnx"))
    dtypes = {init.data_type for init in proto.graph.initializer if len(init.dims) == 4}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_int8_onnx_is_quantised_with_qdq_nodes(weights, prepared, tmp_path, mlflow_store):
    out = tmp_path / "q"
    export_model(weights, prepared, DATA, _cfg(precisions=("fp32", "int8")), out)
    ops = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_perturbed_artifact_fails_the_gate():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 10)).astype(np.float32)
    labels = ref.argmax(1)
    ok = compare("fp32", ref, ref + 1e-5, labels, Tolerance(max_abs_logit=1e-3, min_agreement=1.0))
    assert ok.passed
    bad = compare(
        "fp32",
        ref,
        ref + rng.normal(0, 0.5, ref.shape).astype(np.float32),
        labels,
        Tolerance(max_abs_logit=1e-3, min_agreement=1.0),
    )
    assert not bad.passed and any("max |Δlogit|" in f for f in bad.failures)
    nan = ref.copy()
    nan[3, 2] = np.nan
    assert "NaN or Inf in the outputs" in compare("fp16", ref, nan, labels, Tolerance()).failures


def test_failed_required_artifact_stops_the_stage_and_is_rejected(weights, prepared, tmp_path, mlflow_store):
    strict = _cfg(
        precisions=("fp32", "int8"),
        required=("fp32", "int8"),
        tolerances={"fp32": Tolerance(max_abs_logit=1e-3), "int8": Tolerance(max_abs_logit=1e-9)},
    )
    with pytest.raises(ExportError, match="int8"):
        export_model(weights, prepared, DATA, strict, tmp_path / "x")
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    assert not int8["passed"] and int8["file"] == "rejected/model.int8.onnx"
    assert not (tmp_path / "x" / "model.int8.onnx").exists()


def test_bad_weights_give_clear_errors(weights, prepared, tmp_path, mlflow_store):
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated"):
        export_model(truncated, prepared, DATA, _cfg(), tmp_path / "o")
    with pytest.raises(WeightsError, match="WRN-10-1 weights, but WRN-28-10"):
        export_model(weights, prepared, DATA, _cfg(), tmp_path / "o", depth=28, width=10)
    wide = tmp_path / "w.safetensors"
    save_weights(WideResNet(10, 2), wide, model_metadata(10, 1, DATA.classes, DATA.mean, DATA.std))
    with pytest.raises(WeightsError, match="does not fit WRN-10-1"):
        export_model(wide, prepared, DATA, _cfg(), tmp_path / "o")
    plain = tmp_path / "plain.pt"
    state = WideResNet(10, 1).state_dict()
    state.pop("fc.bias")
    torch.save(state, plain)
    with pytest.raises(WeightsError, match="Missing key"):
        export_model(plain, prepared, DATA, _cfg(), tmp_path / "o", depth=10, width=1)
    assert not (tmp_path / "o").exists(), "no partial export may be left behind"


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"export.precisions\[1\]: expected one of .* got \"fp8\""):
        ExportConfig(precisions=("fp32", "fp8"))
    params = tmp_path / "params.yaml"
    params.write_text("profiles: {cpu: {}}\nexport:\n  tolerances:\n    bf16: {min_agreement: 1}\n")
    with pytest.raises(ValueError, match=r'export\.tolerances: unknown key "bf16"'):
        load_params(params)


@pytest.mark.gpu
def test_tensorrt_plan_passes_parity(weights, prepared, tmp_path, mlflow_store):
    reason = tensorrt_engine.availability()
    if reason is not None:
        pytest.skip(reason)
    manifest = export_model(
        weights, prepared, DATA, _cfg(precisions=("fp32",)), tmp_path / "trt"
    ).model_dump()
    trt = next(a for a in manifest["artifacts"] if a["precision"] == "trt_fp16")
    assert trt["passed"], trt["parity"]
