"""Quality without labels through a real tritonserver and a real Prometheus.

The served version is the export stage's own output (the small model of ``small_export``), with the
quality reference that stage wrote. Its reference statistics are those of the prepared test split's
files, so sending exactly those files (repeated past the 200-image guard) is traffic with no input
drift at all; the same files blurred and noised strongly are traffic with a great deal. The module
checks, in this order:

* the served counts are exactly what the version's reference says for the images sent: every
  answer's temperature-scaled confidence computed here, in process, against the same threshold;
* on the clean traffic no input statistic drifts and no quality alert fires;
* on the corrupted traffic the input-drift alert fires in Prometheus, and ``cifar10 monitor
  status`` flags the estimate unreliable and exits 1.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from PIL import Image

from commands.main import main
from common.params import MonitoringConfig
from monitoring import accuracy_estimate as est
from monitoring import dashboard, quality_status
from monitoring.quality_reference import QualityReference
from serving.repository.build import build_repository
from serving.repository.spec import ServedVersion
from serving.server.embedded import EmbeddedServer
from tests.conftest import fp32_tolerance
from tests.monitoring.conftest import MONITORING
from tests.monitoring.test_live import Prometheus
from tests.monitoring.test_rules import live_expr
from tests.serving.conftest import make_spec, ort_session, pack
from training.corruptions import corrupt

pytestmark = pytest.mark.triton
REPEAT = 12  # 20 test files x 12 = 240 images: past the 200-image guard of the alerts
CFG = MonitoringConfig()


@pytest.fixture(scope="module")
def served(small_export, small_prepared, launch, tmp_path_factory) -> tuple[EmbeddedServer, Path, Path]:
    export_dir, _ = small_export
    onnx = export_dir / "model.fp32.onnx"
    reference = export_dir / "quality" / "fp32" / "quality_reference.json"
    assert reference.is_file(), "the export stage writes each passed form's quality reference"
    spec = make_spec({1: onnx}, production=1)
    model = spec.classifiers[0]
    model = type(model)(**{**model.__dict__, "versions": (ServedVersion(1, onnx, reference),)})
    spec = type(spec)(**{**spec.__dict__, "classifiers": (model,), "metrics_flush_s": 0.2})
    repo = tmp_path_factory.mktemp("quality") / "model_repository"
    build_repository(spec, repo)
    return launch(repo), onnx, reference


@pytest.fixture(scope="module")
def prometheus(prometheus_bin, served, tmp_path_factory) -> Iterator[Prometheus]:
    prom = Prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), served[0].config.metrics_port)
    try:
        yield prom.wait_ready()
    finally:
        prom.stop()


def _files(prepared: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((prepared / "test_images").rglob("*")) if p.is_file()]


def _send(server: EmbeddedServer, files: list[bytes]) -> None:
    http = httpclient.InferenceServerClient(server.http_endpoint)
    try:
        for i in range(0, len(files), 8):
            chunk = pack(files[i : i + 8])
            tensor = httpclient.InferInput("IMAGE", list(chunk.shape), "BYTES")
            tensor.set_data_from_numpy(chunk)
            http.infer("cifar10", [tensor])
    finally:
        http.close()


def _scored(server: EmbeddedServer, want: float, timeout: float = 10.0) -> quality_status.Samples:
    """The metrics page once the quality counters (pushed every metrics_flush_s) have caught up."""
    deadline = time.monotonic() + timeout
    while True:
        samples = quality_status.scrape(server.url_metrics)
        scored = sum(samples.get("quality_prediction_total", {}).get(("wrn_fp32", "1"), {}).values())
        if scored >= want or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


@pytest.fixture(scope="module")
def clean(served, prometheus, small_prepared) -> quality_status.Samples:
    server = served[0]
    assert prometheus.wait_for('count(nv_inference_count{model="cifar10"})', bool, timeout=30)
    files = _files(small_prepared) * REPEAT
    _send(server, files)
    return _scored(server, len(files))


def test_served_counts_are_what_the_versions_reference_says_for_these_images(served, clean, small_prepared):
    _, onnx, reference_path = served
    reference = QualityReference.read(reference_path)
    files = _files(small_prepared)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB"), dtype=np.float32) for f in files])
    x = ((pixels / 255.0 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616])).astype(
        np.float32
    )
    logits = ort_session(onnx).run(None, {"input": x.transpose(0, 3, 1, 2)})[0]
    conf = est.confidence(logits, reference.temperature)
    # Triton's ONNX Runtime and this one may differ by the fp32 logit tolerance the export promises;
    # a top probability moves by at most that much over T, so only answers that close can flip.
    near = np.abs(conf - reference.threshold) <= fp32_tolerance() / reference.temperature
    expected = int(np.count_nonzero(conf > reference.threshold)) * REPEAT
    scored = clean["quality_prediction_total"][("wrn_fp32", "1")][()]
    confident = clean["confident_prediction_total"][("wrn_fp32", "1")][()]
    assert scored == len(files) * REPEAT  # warm-up samples are answered, never counted
    assert abs(confident - expected) <= int(near.sum()) * REPEAT
    live = clean["input_statistic_total"][("wrn_fp32", "1")]
    per_statistic = {}
    for (statistic, _), n in live.items():
        per_statistic[statistic] = per_statistic.get(statistic, 0) + n
    assert set(per_statistic.values()) == {len(files) * REPEAT}


def test_clean_traffic_drifts_nowhere_and_fires_no_quality_alert(served, prometheus, clean):
    (row,) = quality_status.status(clean, CFG)
    assert row.reliable(CFG), [d for d in row.drift if d.drifted(CFG)]
    assert all(d.psi is not None and d.psi < 1e-9 for d in row.drift)  # the reference's own files
    psi = prometheus.wait_for("cifar10:input_psi:30m", lambda r: len(r) == 6, timeout=30)
    assert len(psi) == 6 and max(float(s["value"][1]) for s in psi) < CFG.input_psi
    alerts = prometheus.query('ALERTS{alertname="Cifar10InputDrift"}')
    assert alerts == []


def test_strongly_corrupted_traffic_fires_the_input_drift_alert_and_status_exits_1(
    served, prometheus, clean, small_prepared, capsys
):
    server = served[0]
    images = np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in _files(small_prepared)])
    shifted = corrupt(images, "blur", "strong", seed=0) + corrupt(images, "gaussian_noise", "strong", seed=0)
    files = shifted * (REPEAT // 2)  # 2 kinds x 20 files x 6 = 240 images
    _send(server, files)
    samples = _scored(server, 2 * len(_files(small_prepared)) * REPEAT + len(files))
    (row,) = quality_status.status(samples, CFG)
    assert not row.reliable(CFG)
    firing = prometheus.wait_for(
        'ALERTS{alertname="Cifar10InputDrift",alertstate="firing"}', lambda r: bool(r), timeout=45
    )
    assert firing, prometheus.query("cifar10:input_psi:30m")
    assert {a["metric"]["statistic"] for a in firing} & {"sharpness", "encoded_bytes_per_pixel"}
    with pytest.raises(SystemExit) as done:
        main(["monitor", "status", "--prometheus", prometheus.url, "--range", "30m"])
    assert done.value.code == 1
    out = capsys.readouterr().out
    assert "unreliable: inputs drift" in out and "DRIFT" in out


@pytest.mark.parametrize(
    "title,expr",
    [
        (title, expr)
        for title, expr in dashboard.expressions(
            json.loads((MONITORING / "grafana/dashboards/cifar10-triton.json").read_text())
        )
        if title.startswith("Quality:")
    ],
)
def test_every_quality_panel_returns_data(prometheus, clean, title, expr):
    result = prometheus.wait_for(live_expr(expr), bool, timeout=30)
    assert result, f"panel {title!r}: no series for {live_expr(expr)}"
    assert any(np.isfinite(float(item["value"][1])) for item in result), result


def test_the_quality_series_survive_a_reload_and_keep_counting(served, clean, small_prepared):
    """Like the class counter: a reloaded python model keeps its predecessor's series counting
    (Triton 2.51 would free them under the new instance otherwise; see postprocess.py)."""
    server = served[0]
    before = _scored(server, 0)
    scored = before["quality_prediction_total"][("wrn_fp32", "1")][()]
    statistics = sum(before["input_statistic_total"][("wrn_fp32", "1")].values())
    http = httpclient.InferenceServerClient(server.http_endpoint)
    try:
        for model in ("postprocess", "preprocess"):
            config = server.config.model_repository / model / "config.pbtxt"
            os.utime(config, (time.time() + 5, time.time() + 5))  # modified: the load really reloads
            http.load_model(model, headers=server.admin_headers)
    finally:
        http.close()
    files = _files(small_prepared)[:8]
    _send(server, files)
    after = _scored(server, scored + len(files))
    assert after["quality_prediction_total"][("wrn_fp32", "1")][()] == scored + len(files)
    assert sum(after["input_statistic_total"][("wrn_fp32", "1")].values()) == statistics + 6 * len(files)
    assert after["quality_reference_accuracy"][("wrn_fp32", "1")][()] > 0
