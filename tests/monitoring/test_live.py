"""A real Prometheus scraping a real Triton: dashboard queries, drift (CLI and alert), readiness.

One tritonserver (tiny random classifier, class counter on) and one Prometheus (1 s scrape and rule
evaluation, a temp copy of ``monitoring/prometheus.yml`` and of the rules with every ``for:`` set to
0 s) serve the whole module. Traffic: a few mixed requests, one failing request, then 240
predictions of one and the same image, i.e. a prediction mix as skewed as it gets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from commands.main import main
from monitoring import dashboard, drift
from serving.repository.build import build_repository
from serving.server.embedded import EmbeddedServer
from tests.monitoring.conftest import MONITORING, ROOT
from tests.monitoring.test_rules import live_expr
from tests.serving.conftest import encode, free_ports, make_spec, pack, random_image

pytestmark = pytest.mark.triton
SKEWED = 240  # predictions of one image; above the alert's 200-prediction guard


class Prometheus:
    """A ``prometheus`` child process on a free port, with its HTTP query API."""

    def __init__(self, binary: str, workdir: Path, metrics_port: int | list[int]) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "rules"
        rules.mkdir()
        for path in sorted((MONITORING / "rules").glob("*.yml")):
            doc = yaml.safe_load(path.read_text())
            for group in doc["groups"]:
                for rule in group["rules"]:
                    if "for" in rule:
                        rule["for"] = "0s"  # fire on the first evaluation: the test has seconds, not minutes
            (rules / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(rules / "*.yml")]
        ports = metrics_port if isinstance(metrics_port, list) else [metrics_port]  # a fleet: one per replica
        address = {
            "localhost:8002": [f"127.0.0.1:{p}" for p in ports],
            "localhost:9090": [f"127.0.0.1:{self.port}"],
        }
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = [a for t in static["targets"] for a in address[t]]
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> Prometheus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, check, timeout: float = 45) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if check(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def triton(launch, tiny_onnx, tmp_path_factory) -> EmbeddedServer:
    repo = tmp_path_factory.mktemp("monitored") / "model_repository"
    build_repository(make_spec({1: tiny_onnx}, production=1), repo)
    return launch(repo)


@pytest.fixture(scope="module")
def prometheus(prometheus_bin, triton, tmp_path_factory) -> Iterator[Prometheus]:
    prom = Prometheus(prometheus_bin, tmp_path_factory.mktemp("prometheus"), triton.config.metrics_port)
    try:
        yield prom.wait_ready()
    finally:
        prom.stop()


def _infer(http, images: np.ndarray) -> None:
    tensor = httpclient.InferInput("IMAGE", list(images.shape), "BYTES")
    tensor.set_data_from_numpy(images)
    http.infer("cifar10", [tensor])


def _server_predictions(triton: EmbeddedServer) -> float:
    counts = drift.scrape(triton.url_metrics)
    return sum(sum(by_class.values()) for by_class in counts.values())


@pytest.fixture(scope="module")
def traffic(triton, prometheus) -> float:
    """Send the module's traffic, then wait until Prometheus has scraped all of it.

    Prometheus must have scraped the idle server first, or every sample it holds would postdate
    the traffic and each rate() would be 0.
    """
    idle = prometheus.wait_for('count(nv_inference_count{model="cifar10"})', lambda r: bool(r), timeout=30)
    assert idle, "Prometheus never scraped the server"
    http = httpclient.InferenceServerClient(triton.http_endpoint)
    try:
        for i in range(8):
            _infer(http, pack([encode(random_image(100 + 4 * i + j), "PNG") for j in range(4)]))
        with pytest.raises(InferenceServerException):
            _infer(http, pack([b""]))  # no image bytes: a failed request
        same = pack([encode(random_image(7), "PNG")] * 16)
        for _ in range(SKEWED // 16):
            _infer(http, same)
    finally:
        http.close()
    total = _server_predictions(triton)
    assert total == 32 + SKEWED
    seen = prometheus.wait_for(
        "sum(predicted_class_total)", lambda r: r and float(r[0]["value"][1]) == total, timeout=30
    )
    assert seen and float(seen[0]["value"][1]) == total, "Prometheus did not scrape the traffic"
    return total


@pytest.mark.parametrize(
    "title,expr",
    [
        (title, expr)
        for title, expr in dashboard.expressions(
            json.loads((MONITORING / "grafana/dashboards/cifar10-triton.json").read_text())
        )
        # "Release:" needs a release in progress (tests/release); "Quality:" a version with a quality
        # reference (tests/monitoring/test_quality_live.py)
        if not title.startswith(("Release:", "Quality:"))
    ],
)
def test_every_dashboard_query_returns_data(prometheus, traffic, title, expr):
    # cifar10:class_psi:30m comes from a recording rule: give the rule evaluation a moment
    result = prometheus.wait_for(live_expr(expr), lambda r: bool(r), timeout=15)
    assert result, f"panel {title!r}: no series for {live_expr(expr)}"
    values = [float(item["value"][1]) for item in result]
    assert any(np.isfinite(v) for v in values), f"panel {title!r}: only NaN/Inf: {result}"


def test_metric_names_and_labels_as_the_rules_expect(triton, traffic):
    text = urllib.request.urlopen(triton.url_metrics, timeout=10).read().decode()
    for needle in (
        'nv_inference_request_success{model="cifar10",version="1"}',
        'nv_inference_request_failure{model="cifar10",reason="OTHER",version="1"}',
        'nv_inference_request_summary_us{model="cifar10",version="1",quantile="0.99"}',
        'nv_inference_queue_duration_us{model="wrn_fp32",version="1"}',
        'nv_inference_compute_infer_duration_us{model="postprocess",version="1"}',
        'nv_inference_exec_count{model="preprocess",version="1"}',
        'predicted_class_total{class="airplane",model="wrn_fp32",version="1"}',
    ):
        assert needle in text


def test_drift_cli_on_the_server_counters(triton, traffic, reference_file, capsys):
    argv = ["--metrics-url", triton.url_metrics, "--reference", str(reference_file), "--json"]
    with pytest.raises(SystemExit) as exc:
        main(["monitor", "drift", *argv])
    code = exc.value.code
    report = json.loads(capsys.readouterr().out)
    (result,) = report["results"]
    assert code == 1 and result["model"] == "wrn_fp32" and result["version"] == "1"
    assert result["predictions"] == traffic and result["psi"] > 2  # >= 240 of 272 in one class


def test_drift_cli_through_prometheus_standalone(prometheus, traffic, reference_file):
    argv = ["--prometheus", prometheus.url, "--range", "5m", "--reference", str(reference_file)]
    command = [sys.executable, "-m", "commands", "monitor", "drift", *argv]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "wrn_fp32 v1:" in proc.stdout and "-> DRIFT" in proc.stdout


def test_alerts_in_prometheus(prometheus, traffic):
    """Drift and error ratio fire on the real series; the availability alerts stay quiet."""

    def firing(name: str) -> list[dict]:
        expr = f'ALERTS{{alertname="{name}",alertstate="firing"}}'
        return prometheus.wait_for(expr, lambda r: bool(r), timeout=30)

    (alert,) = firing("Cifar10PredictionDrift")
    assert alert["metric"]["model"] == "wrn_fp32" and alert["metric"]["version"] == "1"
    (psi,) = prometheus.query("cifar10:class_psi:30m")
    assert float(psi["value"][1]) > 2
    # 1 failed of 24 ensemble requests (counted twice by Triton) is far above 1 %
    assert {a["metric"]["model"] for a in firing("TritonHighErrorRatio")} == {"cifar10"}
    quiet = "TritonDown|TritonModelNotReady|TritonP99LatencyHigh|Cifar10DriftReferenceMissing"
    assert prometheus.query(f'ALERTS{{alertname=~"{quiet}"}}') == []


def test_model_not_ready_alert_when_the_ensemble_is_unloaded(triton, prometheus, traffic):
    """Runs last: it unloads the ensemble, waits for the alert, and loads it again."""
    http = httpclient.InferenceServerClient(triton.http_endpoint)
    try:
        http.unload_model("cifar10", headers=triton.admin_headers)
        result = prometheus.wait_for(
            'ALERTS{alertname="TritonModelNotReady",alertstate="firing"}', lambda r: bool(r), timeout=30
        )
        assert result and result[0]["metric"]["job"] == "triton"
        http.load_model("cifar10", headers=triton.admin_headers)
        assert http.is_model_ready("cifar10")
        cleared = prometheus.wait_for('ALERTS{alertname="TritonModelNotReady"}', lambda r: not r, timeout=30)
        assert cleared == []
    finally:
        http.close()
