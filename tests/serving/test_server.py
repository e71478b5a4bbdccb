"""A real tritonserver on the generated repository: parity, the ensemble, errors, security, metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from client.core.transport import parse_classification
from serving.repository.build import build_repository
from serving.repository.spec import ServedModel, ServedVersion
from serving.server.embedded import EmbeddedServer, ServerConfig, ServerError
from tests.conftest import CLASSES, fp32_tolerance, huge_png
from tests.serving.conftest import (
    CLASSIFIER,
    encode,
    free_ports,
    make_spec,
    ort_session,
    pack,
    random_image,
    reference_preprocess,
    triton_or_skip,
)

pytestmark = pytest.mark.triton
SPARE = "wrn_spare"


@pytest.fixture(scope="module")
def server(launch, onnx_models, tmp_path_factory) -> EmbeddedServer:
    spare = ServedModel(SPARE, "onnxruntime", (ServedVersion(1, onnx_models[2]),), 1, 256)
    repo = tmp_path_factory.mktemp("served") / "model_repository"
    build_repository(make_spec({1: onnx_models[1]}, production=1, extra=(spare,)), repo)
    return launch(repo)


@pytest.fixture(scope="module")
def http(server):
    client = httpclient.InferenceServerClient(server.http_endpoint, concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server):
    client = grpcclient.InferenceServerClient(server.url_grpc)
    yield client
    client.close()


@pytest.fixture(scope="module")
def session(onnx_models):
    return ort_session(onnx_models[1])


def http_input(name: str, array: np.ndarray, datatype: str) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def grpc_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def ensemble(http, images: np.ndarray, k: int = 0) -> httpclient.InferResult:
    """``k`` > 0: the top k through the classification extension; 0: the full softmax."""
    outputs = [httpclient.InferRequestedOutput("PROBABILITIES", class_count=k)] if k else None
    return http.infer("cifar10", [http_input("IMAGE", images, "BYTES")], outputs=outputs)


def assert_still_serving(http) -> None:
    result = ensemble(http, pack([encode(random_image(99), "PNG")]))
    assert result.as_numpy("PROBABILITIES").shape == (1, 10)


def test_classifier_over_http_and_grpc_matches_onnxruntime(http, grpc, session):
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    expected = session.run(["logits"], {"input": x})[0]
    via_http = http.infer(CLASSIFIER, [http_input("input", x, "FP32")], model_version="1").as_numpy("logits")
    via_grpc = grpc.infer(CLASSIFIER, [grpc_input("input", x, "FP32")], model_version="1").as_numpy("logits")
    # Serving must not move a logit by more than the fp32 tolerance the export promises (params.yaml).
    assert np.abs(via_http - expected).max() <= fp32_tolerance()
    assert np.abs(via_grpc - expected).max() <= fp32_tolerance()


def test_classification_extension_uses_the_label_file(http, session):
    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    out = httpclient.InferRequestedOutput("logits", class_count=3)
    top = http.infer(CLASSIFIER, [http_input("input", x, "FP32")], outputs=[out]).as_numpy("logits")
    best = session.run(["logits"], {"input": x})[0].argmax(axis=1)
    for row, index in zip(top, best, strict=True):
        _, idx, label = row[0].decode().split(":")
        assert int(idx) == index and label


def test_ensemble_answers_png_and_jpeg_of_any_size_like_the_classifier(http, grpc, session):
    blobs = [
        encode(random_image(1), "PNG"),
        encode(random_image(2, 64, 48), "JPEG"),
        encode(random_image(3, 20, 28), "PNG"),
        encode(random_image(4), "JPEG"),
    ]
    probs = ensemble(http, pack(blobs)).as_numpy("PROBABILITIES")  # one request, mixed sizes and formats
    assert probs.shape == (4, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    logits = session.run(["logits"], {"input": np.stack([reference_preprocess(b) for b in blobs])})[0]
    for row, idx in zip(logits, probs.argmax(axis=1), strict=True):
        # equal, or a near-tie that a logit shift within the fp32 tolerance can flip
        assert idx == row.argmax() or row.max() - row[idx] <= 2 * fp32_tolerance()
    top = [parse_classification(row) for row in ensemble(http, pack(blobs), k=3).as_numpy("PROBABILITIES")]
    assert [t[2] for t in top] == probs.argmax(axis=1).tolist()
    assert all(t[0][0] == CLASSES[t[2]] and t[1] == sorted(t[1], reverse=True) for t in top)
    # One image per request gives the same classes as the multi-image request.
    for blob, (labels, _, _) in zip(blobs, top, strict=True):
        out = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=3)
        single = grpc.infer("cifar10", [grpc_input("IMAGE", pack([blob]), "BYTES")], outputs=[out])
        assert parse_classification(single.as_numpy("PROBABILITIES")[0])[0] == labels


BAD_REQUESTS = {
    "wrong dtype": (CLASSIFIER, "input", np.zeros((1, 3, 32, 32), np.float64), "FP64", "data-type is 'FP64'"),
    "wrong shape": (CLASSIFIER, "input", np.zeros((1, 3, 16, 16), np.float32), "FP32", "unexpected shape"),
    "batch too large": (
        CLASSIFIER,
        "input",
        np.zeros((257, 3, 32, 32), np.float32),
        "FP32",
        "must be <= 256",
    ),
    "ensemble batch too large": ("cifar10", "IMAGE", pack([b"x"] * 65), "BYTES", "must be <= 64"),
    "the old UINT8 form": ("cifar10", "IMAGE", np.ones((1, 8), np.uint8), "UINT8", "expects 'BYTES'"),
    "corrupt image": ("cifar10", "IMAGE", pack([b"\x89PNG garbage"]), "BYTES", "not a PNG or JPEG"),
    "truncated image": ("cifar10", "IMAGE", pack([encode(random_image(5), "PNG")[:80]]), "BYTES", "decoded"),
    "empty image": ("cifar10", "IMAGE", pack([b""]), "BYTES", "is empty"),
    # Limits from params.yaml serving.max_image_* (defaults: 1 MiB encoded, 4096 x 4096 decoded).
    "image bytes over the limit": (
        "cifar10",
        "IMAGE",
        pack([b"\x89PNG" + bytes(1 << 20)]),
        "BYTES",
        "more than the 1048576 allowed",
    ),
    "decompression bomb": ("cifar10", "IMAGE", pack([huge_png(50_000, 50_000)]), "BYTES", "is too large"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_client_error_and_the_server_keeps_serving(http, grpc, case):
    model, name, array, datatype, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as over_http:
        http.infer(model, [http_input(name, array, datatype)])
    assert over_http.value.status() == "400" and message in over_http.value.message()
    with pytest.raises(InferenceServerException) as over_grpc:
        grpc.infer(model, [grpc_input(name, array, datatype)])
    assert over_grpc.value.status() == "StatusCode.INVALID_ARGUMENT" and message in over_grpc.value.message()
    assert_still_serving(http)


def test_one_corrupt_request_among_concurrent_ones_fails_alone(http):
    images = [pack([encode(random_image(10 + i), "PNG" if i % 2 else "JPEG")]) for i in range(8)]
    images[3] = pack([b"corrupt bytes, not an image"])
    pending = [http.async_infer("cifar10", [http_input("IMAGE", img, "BYTES")]) for img in images]
    outcomes = []
    for request in pending:
        try:
            outcomes.append(request.get_result().as_numpy("PROBABILITIES").shape)
        except InferenceServerException as exc:
            outcomes.append(exc.status())
    assert outcomes == [(1, 10)] * 3 + ["400"] + [(1, 10)] * 4


def test_model_repository_api_needs_the_admin_header(server, http, grpc):
    for call in (lambda: http.get_model_repository_index(), lambda: http.unload_model(SPARE)):
        with pytest.raises(InferenceServerException) as denied:
            call()
        assert denied.value.status() == "403" and "restricted" in denied.value.message()
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.load_model(SPARE)
    assert http.is_model_ready(SPARE)
    http.unload_model(SPARE, headers=server.admin_headers)
    assert not http.is_model_ready(SPARE)
    grpc.load_model(SPARE, headers=server.admin_headers_grpc)
    assert http.is_model_ready(SPARE)
    index = {
        (m["name"], m.get("version")): m["state"]
        for m in http.get_model_repository_index(server.admin_headers)
    }
    assert index[(CLASSIFIER, "1")] == "READY" and index[("cifar10", "1")] == "READY"


def test_prediction_counter_and_latency_summaries_are_exported(server, http):
    images = [pack([encode(random_image(i), "PNG")]) for i in range(8)]
    for pending in [http.async_infer("cifar10", [http_input("IMAGE", img, "BYTES")]) for img in images]:
        pending.get_result()
    text = urllib.request.urlopen(server.url_metrics, timeout=10).read().decode()
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("predicted_class_total{")
        and f'model="{CLASSIFIER}"' in line
        and 'version="1"' in line
    ]
    assert len(counts) == 10 and sum(counts) >= 8
    assert 'nv_inference_request_summary_us{model="cifar10",version="1",quantile="0.5"}' in text


def test_server_that_cannot_start_reports_its_log(tmp_path, server):
    triton_or_skip()
    taken = server.config.http_port  # already bound by the module's server
    _, grpc_port, metrics_port = free_ports(3)
    config = ServerConfig(
        server.config.model_repository,
        http_port=taken,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_file=tmp_path / "fail.log",
        exit_timeout_s=1,
    )
    with pytest.raises(ServerError, match=r"exited with code[\s\S]*fail\.log"), EmbeddedServer(config):
        pass


def test_cli_serve_starts_and_stops_on_sigterm(tmp_path, server):
    http_port, grpc_port, metrics_port = free_ports(3)
    cmd = [
        sys.executable,
        "-m",
        "commands",
        "serve",
        "--model-repository",
        str(server.config.model_repository),
    ]
    cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    cmd += ["--log-file", str(tmp_path / "cli.log"), "--ort-threads", "1"]
    env = {**os.environ, "CIFAR10_ADMIN_TOKEN": "cli-token"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        seen = []  # a warning (say, about stubs an earlier server orphaned) may come first
        while not (seen and seen[-1].startswith("tritonserver ready")):
            line = proc.stdout.readline()
            assert line, "serve exited before it was ready:\n" + "".join(seen)
            seen.append(line)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        assert client.is_server_ready()
        client.load_model(SPARE, headers={"x-cifar10-admin": "cli-token"})
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "tritonserver stopped" in out
