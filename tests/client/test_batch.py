"""``client batch`` against a real embedded Triton: both protocols, both request forms, bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from client.core.request_loop import DEFAULT_REQUEST_BATCH
from tests.client.conftest import PRODUCTION, cli_args, make_spec, start_server
from tests.client.test_cli import run_cli

pytestmark = pytest.mark.triton


def read_rows(out: Path) -> list[dict]:
    with open(out / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("mode", ["bytes", "tensor"])
def test_batch_every_image_once_and_server_counters_agree(triton, labelled_images, tmp_path, protocol, mode):
    out = tmp_path / "out"
    argv = ["batch", *cli_args(triton), "--images", str(labelled_images), "--protocol", protocol]
    assert run_cli([*argv, "--mode", mode, "-c", "4", "--out", str(out)]) == 0

    rows = read_rows(out)
    files = sorted(str(p) for p in labelled_images.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in rows) == files  # every image exactly once
    assert all(r["status"] == "ok" and r["attempts"] == "1" for r in rows)
    assert all(r["true_label"] == Path(r["path"]).parent.name for r in rows)
    assert all(0 < float(r["probability"]) <= 1 and float(r["latency_ms"]) > 0 for r in rows)

    s = json.loads((out / "summary.json").read_text())
    n = len(files)
    assert s["counts"] == {
        "total": n,
        "ok": n,
        "error": 0,
        "skipped": 0,
        "retried_images": 0,
        "retry_attempts": 0,
    }
    assert s["throughput_img_per_s"] > 0 and s["latency_ms"]["p50"] <= s["latency_ms"]["p99"]
    assert sum(s["predicted_classes"].values()) == n
    server = s["server_metrics"]
    assert server["available"] and not server["counter_reset"]
    success = server["counters"]["nv_inference_request_success"]
    images = server["counters"]["nv_inference_count"]
    per_request = s["request_batch"]
    assert per_request == DEFAULT_REQUEST_BATCH and n > per_request  # several images per request
    requests = -(-n // per_request)
    if mode == "bytes":
        assert success["model=cifar10,version=1"] == requests
        assert images["model=cifar10,version=1"] == n
        assert images[f"model=wrn_fp32,version={PRODUCTION}"] == n
        # The server's own prediction counter saw exactly what the client received.
        assert server["predicted_class_total_by_class"] == {
            k: float(v) for k, v in s["predicted_classes"].items()
        }
    else:
        assert success == {f"model=wrn_fp32,version={PRODUCTION}": requests}  # no ensemble, no python steps
        assert images == {f"model=wrn_fp32,version={PRODUCTION}": n}
        assert "predicted_class_total" not in server["counters"]


def test_bytes_and_tensor_predictions_agree(triton, labelled_images):
    """Client-side preprocessing reproduces the server's, so both forms give the same answers.

    Both forms feed the classifier the same tensor; only ONNX Runtime's batch composition differs,
    which moves a logit by less than the fp32 tolerance the export promises (``params.yaml``). A
    logit shift of ``tol`` moves a softmax probability by at most ``expm1(2 tol)``, and can swap the
    top class only where the two best lie within that of each other: this untrained net has such
    near-ties, and for them the other run's class must be this run's runner-up. That holds on any
    CPU, however many near-ties its kernels happen to produce.
    """
    import math

    from client.core.images import discover
    from client.core.transport import Endpoint
    from client.jobs.folder_batch import BatchConfig, run_batch
    from common.params import load_params
    from tests.prerequisites import ROOT

    tol = load_params(ROOT / "params.yaml").export.tolerances["fp32"].max_abs_logit
    bound = math.expm1(2 * tol) + 2e-6  # + the 6-decimal rounding of each recorded probability
    endpoint = Endpoint("http", triton.http_endpoint, triton.url_grpc, request_timeout_s=10)
    items = discover(labelled_images)
    runs = {
        mode: {
            r.path: r
            for r in run_batch(items, BatchConfig(endpoint, mode, metrics_url=None, progress=False)).records
        }
        for mode in ("bytes", "tensor")
    }
    assert len(runs["bytes"]) == len(runs["tensor"]) == len(items)
    for path, b in runs["bytes"].items():
        t = runs["tensor"][path]
        assert b.status == t.status == "ok"
        assert abs(b.probability - t.probability) <= bound, (path, b.topk, t.topk)
        if b.predicted_label != t.predicted_label:
            runner_up = dict(b.topk)[t.predicted_label]
            assert b.probability - runner_up <= bound, (path, b.topk, t.topk)


@pytest.mark.parametrize("mode", ["bytes", "tensor"])
def test_unreadable_files_are_skipped_and_reported(triton, messy_images, tmp_path, mode):
    out = tmp_path / "out"
    argv = ["batch", *cli_args(triton), "--images", str(messy_images), "--mode", mode, "--out", str(out)]
    assert run_cli(argv) == 0
    listed = read_rows(out)
    rows = {str(Path(r["path"]).relative_to(messy_images)): r for r in listed}
    files = [p for p in messy_images.rglob("*") if p.is_file()]
    assert len(listed) == len(rows) == len(files)  # each file exactly once
    bad = {"cat/notes.jpg", "dog/empty.png", "bird/truncated.jpg"} | (
        {"frog/green.gif"} if mode == "bytes" else set()
    )
    for name in bad:
        assert rows[name]["status"] == "skipped" and rows[name]["error"].startswith("unreadable:"), rows[name]
        assert rows[name]["attempts"] == "0"  # never sent
    assert "empty" in rows["dog/empty.png"]["error"]
    if mode == "tensor":
        assert rows["frog/green.gif"]["status"] == "ok"  # decoded client-side, any PIL format works
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == len(files) - len(bad)
    s = json.loads((out / "summary.json").read_text())
    assert s["counts"]["skipped"] == len(bad) and s["skipped_by_type"] == {"unreadable": len(bad)}
    assert s["server_metrics"]["counters"]["nv_inference_count"][
        f"model=wrn_fp32,version={PRODUCTION}"
    ] == len(ok)


def test_model_not_ready_exits_4(triton, labelled_images, tmp_path, capsys):
    base = ["batch", *cli_args(triton), "--images", str(labelled_images), "--out", str(tmp_path)]
    assert run_cli([*base, "--mode", "tensor", "--model-version", "7"]) == 4
    assert run_cli([*base, "--model", "no_such_model"]) == 4
    assert "not ready" in capsys.readouterr().err


def test_tensors_for_the_ensemble_are_refused_before_anything_is_sent(triton, labelled_images, capsys):
    """The ensemble takes encoded images: it declares no mean/std, so tensor mode stops at once (4)."""
    argv = ["batch", *cli_args(triton), "--images", str(labelled_images), "--mode", "tensor"]
    assert run_cli([*argv, "--model", "cifar10", "--limit", "5"]) == 4
    assert "cifar10 does not declare mean, std" in capsys.readouterr().err


def test_permanent_errors_are_not_retried(triton, labelled_images, tmp_path):
    """Requests the server rejects (400 / INVALID_ARGUMENT: an input it does not have): one attempt each."""
    from client.core.images import discover
    from client.core.transport import Endpoint
    from client.jobs.folder_batch import BatchConfig, run_batch, write_outputs

    items = discover(labelled_images, limit=5)
    for protocol in ("http", "grpc"):
        out = tmp_path / protocol
        endpoint = Endpoint(protocol, triton.http_endpoint, triton.url_grpc, request_timeout_s=10)
        cfg = BatchConfig(
            endpoint, "tensor", input_name="not_an_input", metrics_url=None, progress=False, request_batch=1
        )
        write_outputs(run_batch(items, cfg), out)
        rows = read_rows(out)
        assert len(rows) == 5
        assert all(r["status"] == "error" and r["attempts"] == "1" for r in rows)
        assert all(r["error"].startswith("invalid_argument:") for r in rows)
        s = json.loads((out / "summary.json").read_text())
        assert s["errors_by_type"] == {"invalid_argument": 5}


def test_random_images(triton, tmp_path):
    out = tmp_path / "out"
    assert run_cli(["batch", *cli_args(triton), "--random", "12", "--seed", "1", "--out", str(out)]) == 0
    rows = read_rows(out)
    assert [r["path"] for r in rows] == [f"random://{i:06d}.png" for i in range(12)]
    assert all(r["status"] == "ok" and r["true_label"] == "" for r in rows)


def test_request_batching_one_bad_image_fails_alone(tritonserver, tiny_onnx, labelled_images, tmp_path):
    """One image the server refuses shares a request with good ones: only it fails, each image once.

    The server here decodes at most 48 x 48 pixels, the client accepts far more, so the 100 x 100
    file reaches the server and fails its whole request; the client then sends that request's images
    one by one. The classes equal those of one image per request.
    """
    import dataclasses
    import shutil

    from PIL import Image

    from serving.repository.build import build_repository

    folder = tmp_path / "images"
    shutil.copytree(labelled_images, folder)
    big = folder / "cat" / "big.png"
    Image.new("RGB", (100, 100), (200, 30, 30)).save(big)
    build_repository(dataclasses.replace(make_spec(tiny_onnx), max_image_pixels=48 * 48), tmp_path / "repo")
    server = start_server(tritonserver, None, tmp_path)
    try:
        base = ["batch", *cli_args(server), "--images", str(folder), "-c", "2"]
        assert run_cli([*base, "--request-batch", "8", "--out", str(tmp_path / "b8")]) == 1
        assert run_cli([*base, "--request-batch", "1", "--out", str(tmp_path / "b1")]) == 1
    finally:
        server.stop(grace=10)
    batched, single = read_rows(tmp_path / "b8"), read_rows(tmp_path / "b1")
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    assert sorted(r["path"] for r in batched) == files  # every image exactly once
    bad = [r for r in batched if r["status"] != "ok"]
    assert [r["path"] for r in bad] == [str(big)]
    assert bad[0]["error"].startswith("invalid_argument:") and "too large" in bad[0]["error"]
    assert bad[0]["attempts"] == "2"  # its shared request, then its own
    shared = [r for r in batched if r["status"] == "ok" and r["attempts"] == "2"]
    assert 0 < len(shared) <= 7  # the other images of that request, answered one by one
    by_path = {r["path"]: r["predicted_label"] for r in single if r["status"] == "ok"}
    assert {r["path"]: r["predicted_label"] for r in batched if r["status"] == "ok"} == by_path
    s = json.loads((tmp_path / "b8" / "summary.json").read_text())
    assert (s["counts"]["ok"], s["counts"]["error"], s["request_batch"]) == (len(files) - 1, 1, 8)
    assert sum(s["server_metrics"]["predicted_class_total_by_class"].values()) == len(files) - 1
