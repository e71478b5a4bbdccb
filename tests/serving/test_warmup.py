"""Warm-up on a real server: every sample runs at load time, and none of them is counted as traffic."""

from __future__ import annotations

import urllib.request

import pytest

from serving.repository.build import build_repository
from tests.serving.conftest import CLASSIFIER, encode, make_spec, pack, random_image

pytestmark = pytest.mark.triton


def test_a_loaded_version_has_run_its_warmup_samples_and_counted_none(launch, onnx_models, tmp_path):
    import tritonclient.http as httpclient

    build_repository(make_spec(onnx_models, production=1), tmp_path / "repo")
    server = launch(tmp_path / "repo", log_verbose=1)
    log = server.log_file.read_text()
    for model, samples in {
        CLASSIFIER: ("batch_1", "batch_4", "batch_8"),
        "preprocess": ("jpeg_batch_1", "jpeg_batch_4", "jpeg_batch_8"),  # a real JPEG, decoded
        "postprocess": ("uncounted_batch_1", "uncounted_batch_8"),
    }.items():
        for sample in samples:
            assert f"model '{model}' instance {model}_0_0 is running warmup sample '{sample}'" in log
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.config.metrics_port}/metrics").read().decode()
    counted = [line for line in page.splitlines() if line.startswith("predicted_class_total{")]
    assert counted and all(line.endswith(" 0") for line in counted), counted
    client = httpclient.InferenceServerClient(server.http_endpoint)
    inp = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(pack([encode(random_image(3), "PNG")]))
    assert client.infer("cifar10", [inp]).as_numpy("PROBABILITIES").shape == (1, 10)
    page = urllib.request.urlopen(f"http://127.0.0.1:{server.config.metrics_port}/metrics").read().decode()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("predicted_class_total{")
    )
    assert total == 1
