"""MLflow's own routes to a registered version: `mlflow models predict` and `mlflow models serve`.

Real processes of MLflow's CLI (``--env-manager local``: this environment), on a folder of images
turned into MLflow's scoring input by ``cifar10 registry serving-input``; their answers are compared
with the pyfunc loaded in-process, and bad input gets MLflow's error, not a crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests

from mlmodel.serving_input import image_files
from registry import aliases, store
from scripts.local_stores import stop_process
from tests.client.conftest import free_port
from tests.conftest import fp32_tolerance, near_ties

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


@pytest.fixture
def production(registry, small_prepared, tmp_path):
    manifest_path, cfg = registry
    rows = store.register_manifest(manifest_path, cfg)
    name = cfg.registered_name("fp32")
    aliases.promote(name, "production", next(r["version"] for r in rows if r["name"] == name))
    images = small_prepared / "test_images"
    request = tmp_path / "input.json"
    done = subprocess.run(
        [BIN / "cifar10", "registry", "serving-input", str(images), "--out", str(request)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = image_files(images)
    expected = mlflow.pyfunc.load_model(f"models:/{name}@production").predict(
        pd.DataFrame({"image": [p.read_bytes() for p in files]})
    )
    return f"models:/{name}@production", request, files, expected


def same_answers(answered: list[dict], expected: pd.DataFrame) -> None:
    """The same file through the same runtime in another process: equal within the fp32 tolerance the
    export promises (a logit moved by t moves a softmax probability by at most t/2), so another CPU's
    thread count or kernels cannot fail it; a label may differ only where the top two are that close."""
    tolerance = fp32_tolerance()
    ours = np.stack(expected["probabilities"]).astype(np.float64)
    theirs = np.asarray([a["probabilities"] for a in answered], dtype=np.float64)
    assert np.allclose(theirs, ours, rtol=0, atol=tolerance / 2)
    tie = near_ties(np.log(np.clip(ours, 1e-30, None)), tolerance)
    labels = np.asarray([a["label"] for a in answered]) == np.asarray(expected["label"])
    indices = np.asarray([a["class_index"] for a in answered]) == expected["class_index"].to_numpy()
    assert (labels | tie).all() and (indices | tie).all()


def test_mlflow_models_predict_answers_a_folder_of_images_as_the_pyfunc_does(production, tmp_path):
    uri, request, files, expected = production
    out = tmp_path / "out.json"
    done = subprocess.run(
        [BIN / "mlflow", "models", "predict", "-m", uri, "-i", str(request), "-t", "json",
         "--env-manager", "local", "-o", str(out)],
        capture_output=True, text=True, timeout=300, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    answered = json.loads(out.read_text())["predictions"]
    assert len(answered) == len(files) == 20
    same_answers(answered, expected)


def test_mlflow_models_serve_answers_the_scoring_protocol_and_refuses_bad_input(production):
    uri, request, _, expected = production
    port = free_port()
    server = subprocess.Popen(
        [BIN / "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-p", str(port),
         "-h", "127.0.0.1", "-w", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 120 s"
            time.sleep(0.5)
        headers = {"Content-Type": "application/json"}
        answer = requests.post(f"{base}/invocations", data=request.read_text(), headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        same_answers(answer.json()["predictions"], expected)
        # the wrong column, and bytes that are no image: MLflow's 400 with the reason, and it keeps serving
        wrong = {"dataframe_split": {"columns": ["picture"], "data": [["aGVsbG8="]]}}
        refused = requests.post(f"{base}/invocations", json=wrong, timeout=60)
        assert refused.status_code == 400 and "image" in refused.json()["message"], refused.text
        garbage = {"dataframe_split": {"columns": ["image"], "data": [["aGVsbG8gd29ybGQ="]]}}
        refused = requests.post(f"{base}/invocations", json=garbage, timeout=60)
        assert refused.status_code == 400 and "not a PNG or JPEG" in refused.json()["message"], refused.text
        again = requests.post(f"{base}/invocations", data=request.read_text(), headers=headers, timeout=60)
        assert again.status_code == 200
    finally:
        stop_process(server, 20)
