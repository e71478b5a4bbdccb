"""The reference WRN-28-10, exported, registered, synced and served, answers like PyTorch through the client.

The whole release path in one test: ``export_model`` (shared session fixture) -> ``register_manifest``
-> ``promote`` -> ``sync`` into a model repository -> a real Triton -> ``client offline-eval`` on 250
test images (25 per class, among the ones the export scored) of the offline mirror, through the public
ensemble (encoded JPEG bytes). About 30 s of requests on 2 CPU cores (WRN-28-10 serves ~20 images/s
here), plus the export.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from common.params import DataConfig
from tests.client.conftest import cli_args, start_server
from tests.client.test_cli import run_cli
from tests.conftest import assert_served_like_pytorch, linked_image_folder, served_reference_files

pytestmark = [pytest.mark.slow, pytest.mark.data, pytest.mark.triton]
NAME = "cifar10-wrn-fp32"


def test_reference_model_via_offline_eval(
    tritonserver, reference_export, prepared_mirror, reference_test_logits, tmp_path, monkeypatch
):
    import mlflow

    from common.params import Params, RegistryConfig
    from registry.aliases import promote
    from registry.store import register_manifest
    from registry.sync import sync

    folder, _, uri = reference_export
    # A private copy of the export's store (its artifacts stay where they are, read-only), so this
    # test's registrations and runs do not leak into other tests sharing the export.
    shutil.copy(uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", local)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", local)
    mlflow.set_registry_uri(local)
    monkeypatch.chdir(tmp_path)
    try:
        cfg = RegistryConfig(serve=("fp32",), ensemble_target="fp32")
        rows = register_manifest(Path(folder) / "manifest.json", cfg)
        version = next(r["version"] for r in rows if r["name"] == NAME)
        promote(NAME, "production", version)
        sync(Params(profile="test", registry=cfg), tmp_path / "repo", tmp_path / "cache")

        server = start_server(tritonserver, None, tmp_path, ort_threads=None)
        try:
            out = tmp_path / "eval"
            images = linked_image_folder(served_reference_files(prepared_mirror), tmp_path / "images")
            argv = ["offline-eval", *cli_args(server), "--images", str(images)]
            code = run_cli([*argv, "--per-class", "25", "-c", "16", "--protocol", "grpc", "--out", str(out)])
        finally:
            server.stop(grace=10)
    finally:
        mlflow.set_registry_uri(None)

    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    print(
        f"reference via Triton: accuracy {metrics['accuracy']:.4f} on {metrics['tested_samples']} images, "
        f"{metrics['throughput_img_per_s']} img/s, latency {metrics['latency_ms']}"
    )
    assert metrics["model_version"] == version and metrics["registered_model"] == NAME
    assert metrics["tested_samples"] == 250 and metrics["failed_samples"] == 0
    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = list(DataConfig().classes)
    predicted = {Path(r["path"]): classes.index(r["predicted_label"]) for r in rows}
    print(assert_served_like_pytorch(predicted, prepared_mirror, reference_test_logits))
