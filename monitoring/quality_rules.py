"""Recording rules and alerts of quality without labels, generated from ``params.yaml``'s ``monitoring``.

The thresholds are settings (``accuracy_drop``, ``input_psi``, ``min_predictions``), and Prometheus
rule files cannot read settings, so the file ``rules/quality.yml`` is generated from them and a test
keeps the committed one current (``cifar10 monitor quality-rules --check``). The series come from the
served python models (:mod:`serving.triton.python_models.quality_metrics`), each against its *own*
version's reference, exported as gauges beside the counters:

* ``cifar10:accuracy_atc:<w>`` - ATC: confident / scored predictions over 5 m and 30 m;
* ``cifar10:class_mix_bound:<w>`` - ``1 - TV(predicted mix, reference label mix)``: no more than this
  share of answers can be right if the images keep the reference's class mix;
* ``cifar10:estimated_accuracy:<w>`` - the smaller of the two (:mod:`monitoring.accuracy_estimate`);
* ``cifar10:input_psi:30m`` - PSI of each input statistic against its reference bins.

Alerts fire only past ``min_predictions`` images, like the class-mix alert, because a handful of
images says nothing about a rate: the binomial standard deviation of an estimate from 200 images is
at most 3.5 points, and ``n * PSI`` of an undrifted statistic with ``b`` bins is about chi-square with
``b - 1`` degrees of freedom (99.9th percentile 27.9 for 10 bins: PSI 0.14 at 200 images).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from common.params import MonitoringConfig

DEFAULT_OUT = Path(__file__).resolve().parent / "rules" / "quality.yml"
GROUP = "cifar10-quality"
WINDOWS = ("5m", "30m")
FLOOR = 0.0001  # as the class-mix PSI: an empty bin adds a large but finite term


def _window_rules(w: str) -> list[dict]:
    by = "sum by (model, version)"
    ref_mix = "max by (model, version, class) (quality_reference_class_ratio)"
    predicted = f"sum by (model, version, class) (increase(predicted_class_total[{w}]))"
    return [
        {
            "record": f"cifar10:quality_predictions:increase{w}",
            "expr": f"{by} (increase(quality_prediction_total[{w}]))",
        },
        {
            "record": f"cifar10:confident_predictions:increase{w}",
            "expr": f"{by} (increase(confident_prediction_total[{w}]))",
        },
        {
            "record": f"cifar10:accuracy_atc:{w}",
            "expr": f"cifar10:confident_predictions:increase{w} / cifar10:quality_predictions:increase{w}",
        },
        {
            "record": f"cifar10:predicted_class_share:{w}",
            "expr": f"{predicted} / ignoring (class) group_left {by} ({predicted})",
        },
        {
            "record": f"cifar10:class_mix_bound:{w}",
            "expr": (
                f"1 - 0.5 * {by} "
                f"(abs(cifar10:predicted_class_share:{w} - on (model, version, class) {ref_mix}))"
            ),
        },
        {
            "record": f"cifar10:estimated_accuracy:{w}",
            "expr": (
                "min by (model, version) ("
                f'label_replace(cifar10:accuracy_atc:{w}, "estimator", "atc", "", "") or '
                f'label_replace(cifar10:class_mix_bound:{w}, "estimator", "class_mix", "", ""))'
            ),
        },
    ]


def _drift_rules() -> list[dict]:
    by = "sum by (model, version, statistic)"
    live = "sum by (model, version, statistic, bin) (increase(input_statistic_total[30m]))"
    share = f"clamp_min(cifar10:input_statistic_share:30m, {FLOOR})"
    ref = f"clamp_min(max by (model, version, statistic, bin) (input_statistic_reference_ratio), {FLOOR})"
    return [
        {
            "record": "cifar10:input_images:increase30m",
            "expr": f"{by} (increase(input_statistic_total[30m]))",
        },
        {
            "record": "cifar10:input_statistic_share:30m",
            "expr": f"{live} / ignoring (bin) group_left cifar10:input_images:increase30m",
        },
        {
            "record": "cifar10:input_psi:30m",
            "expr": (
                f"{by} (({share} - on (model, version, statistic, bin) {ref})"
                f" * ln({share} / on (model, version, statistic, bin) {ref}))"
            ),
        },
        {
            "record": "cifar10:reference_accuracy",
            "expr": "max by (model, version) (quality_reference_accuracy)",
        },
    ]


def _alerts(cfg: MonitoringConfig) -> list[dict]:
    drop, psi, n = cfg.accuracy_drop, cfg.input_psi, cfg.min_predictions
    return [
        {
            "alert": "Cifar10EstimatedAccuracyLow",
            "expr": (
                "cifar10:estimated_accuracy:30m < on (model, version) "
                f"(cifar10:reference_accuracy - {drop!r})"
                f" and on (model, version) cifar10:quality_predictions:increase30m >= {n}"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "Estimated accuracy of {{ $labels.model }} v{{ $labels.version }} is "
                    "{{ $value | humanizePercentage }}, more than "
                    + f"{drop * 100:g}"
                    + " points below its reference"
                ),
                "description": (
                    "Label-free estimate (ATC capped by the class-mix bound) over 30 minutes. "
                    "See `cifar10 monitor status --prometheus URL` for the interval and the input drift."
                ),
            },
        },
        {
            "alert": "Cifar10InputDrift",
            "expr": (
                f"cifar10:input_psi:30m > {psi!r}"
                f" and on (model, version, statistic) cifar10:input_images:increase30m >= {n}"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": (
                    "Input {{ $labels.statistic }} of {{ $labels.model }} v{{ $labels.version }} drifted "
                    '(PSI {{ $value | printf "%.2f" }})'
                ),
                "description": (
                    "PSI of the last 30 minutes of served images against the version's reference "
                    f"above {psi:g}; the accuracy estimate is unreliable while inputs drift."
                ),
            },
        },
    ]


def quality_rules(cfg: MonitoringConfig) -> dict:
    rules = [rule for w in WINDOWS for rule in _window_rules(w)] + _drift_rules() + _alerts(cfg)
    return {"groups": [{"name": GROUP, "rules": rules}]}


def render(cfg: MonitoringConfig) -> str:
    header = (
        "# Generated by `cifar10 monitor quality-rules` from params.yaml (monitoring); do not edit.\n"
        "# Label-free accuracy estimate and input drift per version: monitoring/quality_rules.py.\n"
    )
    return header + yaml.safe_dump(quality_rules(cfg), sort_keys=False, width=100)
