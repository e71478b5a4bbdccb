"""The Triton python models and the python-based onnxruntime backend, run in-process.

``triton_python_backend_utils`` exists only inside Triton's stub, so these tests install a small
fake of the parts the models use; the real server tests (``test_server.py``) cover the rest.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from google.protobuf import json_format
from PIL import Image

import serving
from serving.repository.model_configs import classifier_config, postprocess_config, preprocess_config
from tests.conftest import fp32_tolerance
from tests.serving.conftest import encode, make_spec, pack, random_image, reference_preprocess

PACKAGE = Path(serving.__file__).parent / "triton"  # the code that runs inside Triton
TYPES = {"TYPE_FP32": np.float32, "TYPE_UINT8": np.uint8, "TYPE_INT32": np.int32, "TYPE_STRING": np.object_}


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class FakeError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self.message, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors, error=None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


class FakeMetric:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels, self.value = labels, 0

    def increment(self, n: int) -> None:
        self.value += n


class FakeFamily:
    COUNTER = "counter"
    created: ClassVar[list[FakeFamily]] = []

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.metrics = name, []
        FakeFamily.created.append(self)

    def Metric(self, labels):
        self.metrics.append(FakeMetric(labels))
        return self.metrics[-1]


def _by_name(items: list[dict], name: str) -> dict:
    return next(item for item in items if item["name"] == name)


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor, fake.TritonError, fake.InferenceResponse = FakeTensor, FakeError, FakeResponse
    fake.MetricFamily = FakeFamily
    fake.get_input_tensor_by_name = lambda request, name: request.get(name)
    fake.get_input_config_by_name = lambda config, name: _by_name(config["input"], name)
    fake.get_output_config_by_name = lambda config, name: _by_name(config["output"], name)
    fake.triton_string_to_numpy = TYPES.__getitem__
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.syspath_prepend(str(PACKAGE / "python_models"))  # the stub's sibling modules
    FakeFamily.created = []
    return fake


def load(path: Path, config, model_dir: Path, version: int = 1, name: str = "m"):
    spec = importlib.util.spec_from_file_location(f"model_under_test_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    args = {
        "model_config": json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True)),
        "model_repository": str(model_dir),
        "model_version": str(version),
        "model_name": name,
    }
    model.initialize(args)
    return model


@pytest.fixture
def spec(onnx_models):
    return make_spec(onnx_models, production=1)


def test_preprocess_decodes_a_batch_of_png_and_jpeg_of_any_size(pb_utils, spec, tmp_path):
    model = load(PACKAGE / "python_models/preprocess.py", preprocess_config(spec), tmp_path)
    blobs = [
        encode(random_image(1), "PNG"),
        encode(random_image(2, 48, 64), "JPEG"),
        encode(random_image(3), "PNG"),
    ]
    (response,) = model.execute([{"IMAGE": FakeTensor("IMAGE", pack(blobs))}])
    assert response.error is None
    out = response.outputs["INPUT"]
    assert out.shape == (3, 3, 32, 32) and out.dtype == np.float32
    for i, blob in enumerate(blobs):
        np.testing.assert_allclose(out[i], reference_preprocess(blob), atol=1e-5)


def test_preprocess_fails_only_the_bad_request(pb_utils, spec, tmp_path):
    model = load(PACKAGE / "python_models/preprocess.py", preprocess_config(spec), tmp_path)
    good = pack([encode(random_image(1), "PNG")])
    requests = [
        {"IMAGE": FakeTensor("IMAGE", good)},
        {"IMAGE": FakeTensor("IMAGE", pack([b"GIF89a definitely not a png"]))},
        {"IMAGE": FakeTensor("IMAGE", pack([b""]))},
        {"IMAGE": FakeTensor("IMAGE", pack([encode(random_image(1), "PNG")[:60]]))},
        {"IMAGE": FakeTensor("IMAGE", pack([encode(random_image(2), "PNG"), huge_png()]))},
        {"IMAGE": FakeTensor("IMAGE", good)},
    ]
    responses = model.execute(requests)
    assert [r.error is None for r in responses] == [True, False, False, False, False, True]
    assert all(r.error.code == "INVALID_ARG" for r in responses[1:5])
    assert "image 0 of the request is not a PNG or JPEG" in responses[1].error.message
    assert "is empty" in responses[2].error.message
    assert "could not be decoded" in responses[3].error.message
    assert "image 1 of the request is too large (5000x4000" in responses[4].error.message


def huge_png() -> bytes:
    """20 megapixels that compress to a few kB: a decompression bomb in miniature."""
    buf = io.BytesIO()
    Image.new("1", (5000, 4000)).save(buf, format="PNG")
    return buf.getvalue()


def test_postprocess_softmax_and_counter(pb_utils, spec, tmp_path):
    (tmp_path / "labels.txt").write_text("\n".join(spec.classes) + "\n")
    model = load(PACKAGE / "python_models/postprocess.py", postprocess_config(spec), tmp_path)
    logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
    (response,) = model.execute([{"LOGITS": FakeTensor("LOGITS", logits)}])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(response.outputs["PROBABILITIES"], probs, rtol=1e-5)
    assert set(response.outputs) == {"PROBABILITIES"}  # top-k is the classification extension's job
    (family,) = FakeFamily.created
    assert family.name == "predicted_class_total"
    counts = {m.labels["class"]: m.value for m in family.metrics}
    assert sum(counts.values()) == 4
    assert counts[spec.classes[int(logits[0].argmax())]] >= 1
    assert {(m.labels["model"], m.labels["version"]) for m in family.metrics} == {("wrn_fp32", "1")}
    nan = logits.copy()
    nan[0, 0] = np.nan
    (bad,) = model.execute([{"LOGITS": FakeTensor("LOGITS", nan)}])
    assert bad.error is not None and "non-finite" in bad.error.message


def load_ort(spec, tmp_path):
    """The python onnxruntime backend serving the spec's classifier as ``wrn`` version 1."""
    version_dir = tmp_path / "wrn" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model.onnx").write_bytes(spec.target.versions[0].artifact.read_bytes())
    config = classifier_config(spec.target, spec)
    return load(PACKAGE / "backends/onnxruntime/model.py", config, tmp_path / "wrn", name="wrn")


@pytest.fixture
def ort_model(pb_utils, spec, tmp_path):
    return load_ort(spec, tmp_path)


def test_ort_backend_runs_a_dynamic_batch_in_one_session_call(ort_model):
    calls = []
    session = ort_model.session

    class Counting:
        def run(self, names, feed):
            calls.append({k: v.shape for k, v in feed.items()})
            return session.run(names, feed)

    ort_model.session = Counting()
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(n, 3, 32, 32)).astype(np.float32) for n in (1, 3, 2)]
    responses = ort_model.execute([{"input": FakeTensor("input", x)} for x in inputs])
    assert calls == [{"input": (6, 3, 32, 32)}]
    for x, response in zip(inputs, responses, strict=True):
        # batch of 6 vs batch of n: ORT may pick other kernels; the export's fp32 tolerance bounds it
        np.testing.assert_allclose(
            response.outputs["logits"], session.run(["logits"], {"input": x})[0], atol=fp32_tolerance()
        )


def test_ort_backend_rejects_bad_requests_individually(ort_model):
    good = np.zeros((2, 3, 32, 32), np.float32)
    responses = ort_model.execute(
        [
            {"input": FakeTensor("input", good)},
            {"input": FakeTensor("input", good.astype(np.float64))},
            {"input": FakeTensor("input", np.zeros((2, 3, 16, 16), np.float32))},
            {"input": FakeTensor("input", np.zeros((257, 3, 32, 32), np.float32))},
            {},
        ]
    )
    assert responses[0].error is None and responses[0].outputs["logits"].shape == (2, 10)
    messages = [r.error.message for r in responses[1:]]
    assert all(r.error.code == "INVALID_ARG" for r in responses[1:])
    assert "must be float32, got float64" in messages[0]
    assert "must have shape" in messages[1]
    assert "batch size 257 outside 1..256" in messages[2]
    assert "missing input 'input'" in messages[3]


def test_ort_backend_reports_a_corrupt_model_clearly(pb_utils, spec, tmp_path, corrupt_model):
    (tmp_path / "wrn" / "3").mkdir(parents=True)
    (tmp_path / "wrn" / "3" / "model.onnx").write_bytes(corrupt_model.read_bytes())
    config = classifier_config(spec.target, spec)
    with pytest.raises(RuntimeError, match=r"cannot load wrn:3 from .*model\.onnx"):
        load(PACKAGE / "backends/onnxruntime/model.py", config, tmp_path / "wrn", version=3, name="wrn")
    with pytest.raises(FileNotFoundError, match="model file for wrn:4 not found"):
        load(PACKAGE / "backends/onnxruntime/model.py", config, tmp_path / "wrn", version=4, name="wrn")


def test_postprocess_answers_warmup_samples_without_counting_them(pb_utils, spec, tmp_path):
    """``ROUTE`` -1 marks Triton's model_warmup samples: answered, never in the drift counter."""
    (tmp_path / "labels.txt").write_text("\n".join(spec.classes) + "\n")
    model = load(PACKAGE / "python_models/postprocess.py", postprocess_config(spec), tmp_path)
    logits = np.random.default_rng(1).normal(size=(3, 10)).astype(np.float32)
    warm = {
        "LOGITS": FakeTensor("LOGITS", logits),
        "ROUTE": FakeTensor("ROUTE", np.full((3, 1), -1, np.int32)),
    }
    real = {"LOGITS": FakeTensor("LOGITS", logits[:1])}
    answers = model.execute([warm, real])
    assert all(a.error is None for a in answers) and answers[0].outputs["PROBABILITIES"].shape == (3, 10)
    (family,) = FakeFamily.created
    assert sum(m.value for m in family.metrics) == 1  # only the real request's image


@pytest.mark.parametrize(
    ("mode", "allow", "force_stop"),
    [("run", "1", True), ("always", "1", False), ("off", "0", False), (None, "1", True)],
)
def test_ort_backend_spins_as_the_server_says(pb_utils, spec, tmp_path, monkeypatch, mode, allow, force_stop):
    """``run`` (also without the variable) spins during a run only: idle threads leave the cores free."""
    if mode is None:
        monkeypatch.delenv("CIFAR10_ORT_SPINNING", raising=False)
    else:
        monkeypatch.setenv("CIFAR10_ORT_SPINNING", mode)
    options = load_ort(spec, tmp_path).session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
    if force_stop:
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    else:  # not set: ONNX Runtime's default, threads keep spinning after a run
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry("session.force_spinning_stop")


def test_ort_backend_refuses_an_unknown_spinning_mode(pb_utils, spec, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_ORT_SPINNING", "1")  # not a mode: the server writes run/always/off
    with pytest.raises(RuntimeError, match="CIFAR10_ORT_SPINNING must be one of"):
        load_ort(spec, tmp_path)


def test_server_refuses_an_unknown_spinning_mode_before_it_starts(tmp_path, monkeypatch):
    from serving.server.environment import ORT_SPINNING_ENV, ServerConfig, server_env

    with pytest.raises(ValueError, match="ort_spinning must be one of"):
        ServerConfig(model_repository=tmp_path, ort_spinning="sometimes")
    with pytest.raises(ValueError, match="ort_spinning must be one of"):
        server_env(tmp_path / "no-tritonserver", ort_spinning="sometimes")
    monkeypatch.setenv(ORT_SPINNING_ENV, "1")  # an inherited leftover of the old on/off switch
    with pytest.raises(ValueError, match="got '1'"):
        server_env(tmp_path / "no-tritonserver")
