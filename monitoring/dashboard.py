"""The Grafana dashboard ``grafana/dashboards/cifar10-triton.json``, generated from a panel list.

Grafana's JSON is long and repetitive; generating it from :data:`PANELS` keeps each panel to its
title, unit and PromQL, so a reviewer reads queries instead of layout boilerplate, and a test
(``tests/monitoring``) can run every query against a real Prometheus. Regenerate after editing::

    cifar10 monitor dashboard          # --check: exit 1 if the committed JSON is stale

Queries use ``$__rate_interval`` (Grafana picks a range that is at least four scrape intervals) and
the datasource uid ``prometheus`` provisioned by ``grafana/provisioning/datasources``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from common.params import MonitoringConfig

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards" / "cifar10-triton.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
UID = "cifar10-triton"
RI = "$__rate_interval"


def _rate(metric: str, by: str = "model", selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{selector}[{RI}]))"


_REQUESTS = f"({_rate('nv_inference_request_success')} + {_rate('nv_inference_request_failure')})"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    description: str = ""
    threshold: float | None = None  # a red line where the matching alert fires
    kind: str = "timeseries"
    stacked: bool = False


PANELS: tuple[Panel, ...] = (
    Panel(
        "Request rate by model",
        "reqps",
        (
            (_rate("nv_inference_request_success"), "{{model}} ok"),
            (_rate("nv_inference_request_failure"), "{{model}} failed"),
        ),
        "Successful and failed requests per second. cifar10 is the public ensemble; the others are "
        "its steps (preprocess, classifier, postprocess) or direct classifier calls.",
    ),
    Panel(
        "Error ratio",
        "percentunit",
        ((f"{_rate('nv_inference_request_failure')} / {_REQUESTS}", "{{model}}"),),
        "Failed / all requests. Alert TritonHighErrorRatio at 1 % over 5 m. Triton 2.51 counts each "
        "failed ensemble request twice, so the cifar10 line overstates up to 2x.",
        threshold=0.01,
    ),
    Panel(
        "Latency p95 / p99 (server side)",
        "ms",
        (
            ('max by (model) (nv_inference_request_summary_us{quantile="0.95"}) / 1000', "{{model}} p95"),
            ('max by (model) (nv_inference_request_summary_us{quantile="0.99"}) / 1000', "{{model}} p99"),
        ),
        "Triton's request-duration summaries (sliding window inside the server). "
        "Alert TritonP99LatencyHigh: cifar10 p99 above 250 ms for 5 m.",
        threshold=250,
    ),
    Panel(
        "Queue vs compute time per request",
        "ms",
        (
            (f"{_rate('nv_inference_queue_duration_us')} / {_REQUESTS} / 1000", "{{model}} queue"),
            (f"{_rate('nv_inference_compute_infer_duration_us')} / {_REQUESTS} / 1000", "{{model}} compute"),
        ),
        "Average time a request waits in the scheduler queue versus runs in the model. A growing "
        "queue share means the instances are saturated (add instances or allow larger batches).",
    ),
    Panel(
        "Average batch size",
        "none",
        ((f"{_rate('nv_inference_count')} / {_rate('nv_inference_exec_count')}", "{{model}}"),),
        "Inferences per model execution: how well dynamic batching merges requests.",
    ),
    Panel(
        "Predicted-class distribution",
        "percentunit",
        (
            (
                f"{_rate('predicted_class_total', 'class')} / ignoring (class) group_left "
                f"sum (rate(predicted_class_total[{RI}]))",
                "{{class}}",
            ),
        ),
        "Share of each arg-max class among the ensemble's predictions (postprocess counter). "
        "The validation split is 10 % per class.",
        stacked=True,
    ),
    Panel(
        "Prediction drift (PSI vs validation split, 30 m)",
        "none",
        (("cifar10:class_psi:30m", "{{model}} v{{version}}"),),
        "Recording rule from monitoring/rules/drift.yml. Alert Cifar10PredictionDrift above 0.2 "
        "for 10 m (with at least 200 predictions in the window).",
        threshold=0.2,
    ),
    Panel(
        "Traffic per model version",
        "reqps",
        (
            (
                _rate("nv_inference_count", "model, version", '{model!~"preprocess|postprocess"}'),
                "{{model}} v{{version}}",
            ),
        ),
        "Inferences per second by classifier version (the ensemble routes to production; other "
        "versions see only explicit calls: shadow or canary traffic).",
    ),
    Panel(
        "Quality: estimated accuracy without labels",
        "percentunit",
        (
            ("cifar10:estimated_accuracy:5m", "{{model}} v{{version}} 5m"),
            ("cifar10:estimated_accuracy:30m", "{{model}} v{{version}} 30m"),
            ("cifar10:reference_accuracy", "{{model}} v{{version}} held-out"),
        ),
        "ATC (share of answers above the version's calibrated confidence threshold), capped by the "
        "class-mix bound, against the version's held-out accuracy. Alert Cifar10EstimatedAccuracyLow "
        "when the 30 m estimate is monitoring.accuracy_drop below it. Unreliable while inputs drift.",
    ),
    Panel(
        "Quality: input drift (PSI per statistic, 30 m)",
        "none",
        (("cifar10:input_psi:30m", "{{model}} v{{version}} {{statistic}}"),),
        "Brightness, contrast, saturation, sharpness, encoded size per pixel and resolution of the "
        "served images against the version's reference bins. Alert Cifar10InputDrift above "
        "monitoring.input_psi.",
        threshold=MonitoringConfig().input_psi,
    ),
    Panel(
        "Quality: confident share and class-mix bound (30 m)",
        "percentunit",
        (
            ("cifar10:accuracy_atc:30m", "{{model}} v{{version}} ATC"),
            ("cifar10:class_mix_bound:30m", "{{model}} v{{version}} class-mix bound"),
        ),
        "The two halves of the estimate: under a covariate shift no more than 1 - TV(predicted mix, "
        "label mix) of the answers can be right, however sure the model is of them.",
    ),
    Panel(
        "Release: answers per version",
        "reqps",
        ((_rate("predicted_class_total", "model, version"), "{{model}} v{{version}}"),),
        "Predictions the public ensemble served, by the classifier version that answered: during a "
        "canary the router's split between production and the candidate (cifar10 release).",
    ),
    Panel(
        "Release: shadow agreement with production",
        "percentunit",
        (
            (
                f'sum by (model, version) (rate(shadow_agreement_total{{agree="true"}}[{RI}])) / '
                f"sum by (model, version) (rate(shadow_agreement_total[{RI}]))",
                "{{model}} v{{version}}",
            ),
            (_rate("shadow_dropped_total", "model, version"), "{{model}} v{{version}} dropped /s"),
        ),
        "Share of shadowed images on which the candidate's top-1 equals production's (answers never "
        "served). cifar10 release rolls back below its limit, derived from what the gate requires "
        "(release/limits.py: p + (p - accuracy_margin) - 1 - agreement_slack).",
    ),
    Panel(
        "Release: shadow agreement per class production answered",
        "percentunit",
        (
            (
                f'sum by (model, version, class) (rate(shadow_agreement_total{{agree="true"}}[{RI}])) / '
                f"sum by (model, version, class) (rate(shadow_agreement_total[{RI}]))",
                "{{model}} v{{version}} {{class}}",
            ),
        ),
        "The same share among the images production called each class: a label swap of two classes "
        "drops those two to about zero while the overall share and the class mix barely move. Each "
        "class has its own limit (2 precision - class_margin - 1 - agreement_slack).",
    ),
    Panel(
        "Release: p99 and error ratio per classifier version (router)",
        "ms",
        (
            (
                f"histogram_quantile(0.99, sum by (model, version, path, le) "
                f"(rate(release_route_latency_ms_bucket[{RI}])))",
                "{{model}} v{{version}} {{path}} p99",
            ),
            (
                _rate("release_route_failure_total", "model, version, path"),
                "{{model}} v{{version}} {{path}} failed /s",
            ),
        ),
        "The figures a release step is judged on, measured by the router per version and path "
        "(served, or shadow copies): its calls' p99 - Triton's warm-up executions never pass through "
        "it - and failed calls (a failing candidate's canary requests are answered by production, so "
        "they show here, not to callers).",
    ),
    Panel(
        "Triton up / models loaded",
        "none",
        (
            ('sum(up{job="triton"})', "servers up"),
            ("count(count by (model, version) (nv_inference_count))", "model versions loaded"),
        ),
        "Scrape health and loaded model versions (a model's series exist only while it is loaded).",
        kind="stat",
    ),
)


def _panel(index: int, panel: Panel) -> dict:
    width, height = (24, 4) if panel.kind == "stat" else (12, 8)
    steps = [{"color": "green", "value": None}]
    if panel.threshold is not None:
        steps.append({"color": "red", "value": panel.threshold})
    custom: dict = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if panel.threshold is not None:
        custom["thresholdsStyle"] = {"mode": "line"}
    if panel.stacked:
        custom |= {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60}
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {
            "h": height,
            "w": width,
            "x": (index % 2) * 12 if width == 12 else 0,
            "y": index // 2 * 8,
        },
        "fieldConfig": {
            "defaults": {
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                **({"custom": custom} if panel.kind == "timeseries" else {}),
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard() -> dict:
    return {
        "uid": UID,
        "title": "CIFAR-10 on Triton",
        "description": "Traffic, errors, latency, batching and prediction drift of the cifar10 ensemble.",
        "tags": ["cifar10", "triton"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": [_panel(i, p) for i, p in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def expressions(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of a dashboard JSON, for tests and reviews."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]


def is_current(out: Path = OUT) -> bool:
    """Whether ``out`` holds the dashboard :data:`PANELS` make (a missing file does not)."""
    return out.is_file() and out.read_text() == render()


def write(out: Path = OUT) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render())
