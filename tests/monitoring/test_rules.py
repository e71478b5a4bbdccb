"""Prometheus configs, alert/recording rules and the Grafana dashboard, checked without Triton.

``promtool check`` proves syntax and PromQL parse; ``promtool test rules`` (the files in
``monitoring/rule_tests``) proves each alert fires on synthetic series that should fire it and
stays quiet on those that should not.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from commands.main import main
from monitoring import dashboard, reference_rules
from tests.monitoring.conftest import MONITORING, ROOT

RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
ALERTS = {
    "TritonDown",
    "TritonModelNotReady",
    "TritonHighErrorRatio",
    "TritonP99LatencyHigh",
    "Cifar10PredictionDrift",
    "Cifar10DriftReferenceMissing",
    "Cifar10EstimatedAccuracyLow",
    "Cifar10InputDrift",
}


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_embedded_config_and_its_rules(promtool):
    proc = run(promtool, "check", "config", "monitoring/prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in proc.stdout + proc.stderr
    proc = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_checks_the_compose_config_with_its_rules_resolved(promtool, tmp_path):
    """The compose config names /etc/prometheus/rules; point it at the real folder for the check."""
    text = (MONITORING / "prometheus.compose.yml").read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/rules", str(MONITORING / "rules")))
    proc = run(promtool, "check", "config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in proc.stdout + proc.stderr


def test_embedded_and_compose_configs_differ_only_in_addresses():
    embedded = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    compose = yaml.safe_load((MONITORING / "prometheus.compose.yml").read_text())
    assert embedded["global"] == compose["global"]
    assert [j["job_name"] for j in embedded["scrape_configs"]] == [
        j["job_name"] for j in compose["scrape_configs"]
    ]
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in embedded["scrape_configs"]}
    assert targets == {"triton": ["localhost:8002"], "prometheus": ["localhost:9090"]}
    assert embedded["rule_files"] == ["rules/*.yml"] and compose["rule_files"] == [
        "/etc/prometheus/rules/*.yml"
    ]


def test_alert_rules_fire_and_stay_quiet_on_synthetic_series(promtool):
    tests = sorted((MONITORING / "rule_tests").glob("*.test.yml"))
    assert len(tests) >= 3
    proc = run(promtool, "test", "rules", *(t.name for t in tests), cwd=MONITORING / "rule_tests")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = {
        case["alertname"]
        for t in tests
        for group in yaml.safe_load(t.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
    }
    assert tested == ALERTS


def test_every_alert_has_severity_and_summary():
    alerts = [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert {a["alert"] for a in alerts} == ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def _monitor(*argv: str) -> int:
    """``cifar10 monitor ARGV`` in-process; returns the exit code."""
    with pytest.raises(SystemExit) as exc:
        main(["monitor", *argv])
    return exc.value.code


def _reference_rules(argv: list[str]) -> int:
    return _monitor("reference-rules", *argv)


def test_reference_rules_match_the_generator(tmp_path, reference_file):
    """The committed file equals what the generator makes of a uniform (stratified) split."""
    committed = yaml.safe_load((MONITORING / "rules" / "reference_distribution.yml").read_text())
    classes = json.loads(reference_file.read_text())["classes"]
    assert committed == reference_rules.reference_rules(dict.fromkeys(classes, 0.1))
    out = tmp_path / "ref.yml"
    assert _reference_rules(["--reference", str(reference_file), "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == committed
    assert _reference_rules(["--reference", str(reference_file), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("vector(0.1)", "vector(0.2)", 1))
    assert _reference_rules(["--reference", str(reference_file), "--out", str(out), "--check"]) == 1
    assert _reference_rules(["--reference", str(tmp_path / "missing.json"), "--out", str(out)]) == 2


def test_dashboard_command_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "board.json"
    assert _monitor("dashboard", "--out", str(out), "--check") == 1 and not out.exists()
    assert _monitor("dashboard", "--out", str(out)) == 0 and out.read_text() == dashboard.render()
    assert _monitor("dashboard", "--out", str(out), "--check") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{out}: out of date",
        f"wrote {out} ({len(dashboard.PANELS)} panels)",
        f"{out}: up to date",
    ]


def test_dashboard_is_generated_provisioned_and_complete():
    path = MONITORING / "grafana" / "dashboards" / "cifar10-triton.json"
    assert path.read_text() == dashboard.render(), "stale: run cifar10 monitor dashboard"
    board = json.loads(path.read_text())
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert all(t["datasource"]["uid"] == uid for t in panel["targets"])
    text = json.dumps(board)
    for metric in (
        "nv_inference_request_failure",
        "nv_inference_request_summary_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_exec_count",
        "predicted_class_total",
        "cifar10:class_psi:30m",
    ):
        assert metric in text
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 8


@pytest.mark.parametrize("title,expr", dashboard.expressions(dashboard.dashboard()))
def test_dashboard_queries_parse(promtool, tmp_path, title, expr):
    """Each panel query is valid PromQL (checked as a recording rule; the live test runs them)."""
    rules = {"groups": [{"name": "panel", "rules": [{"record": "panel:check", "expr": live_expr(expr)}]}]}
    path = tmp_path / "panel.yml"
    path.write_text(yaml.safe_dump(rules))
    proc = run(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, f"{title}: {proc.stdout}{proc.stderr}"


def live_expr(expr: str, rate_interval: str = "1m") -> str:
    """A panel query as Grafana would send it: its variables replaced by concrete values."""
    return expr.replace("$__rate_interval", rate_interval)
