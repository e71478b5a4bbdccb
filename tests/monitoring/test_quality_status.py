"""The quality reference file, the generated rules and ``cifar10 monitor status`` on a metrics page."""

from __future__ import annotations

import json

import numpy as np
import pytest

from commands.main import main
from common.params import MonitoringConfig, load_params
from export.quality import SplitNotHeldOut, check_held_out
from monitoring import quality_rules, quality_status
from monitoring.quality_reference import BadQualityReference, QualityReference, build_reference
from serving.triton.python_models.input_statistics import STATISTICS
from tests.monitoring.conftest import MONITORING, ROOT

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CFG = MonitoringConfig(min_predictions=200, accuracy_drop=0.05, input_psi=0.25)


def reference(seed: int = 0) -> QualityReference:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (500, 10))
    labels = np.where(rng.random(500) < 0.8, logits.argmax(1), rng.integers(0, 10, 500))
    statistics = rng.normal(size=(300, len(STATISTICS)))
    return build_reference("fp32", logits, labels, CLASSES, "validation", statistics, 10)


def test_a_reference_round_trips_and_a_damaged_one_is_refused_by_name(tmp_path):
    ref = reference()
    assert abs(np.mean(ref.confidence_counts) * 20 - ref.images) < 1e-9
    assert all(abs(sum(s.ratios) - 1) < 1e-9 for s in ref.statistics.values())
    ref.write(tmp_path / "r.json")
    assert QualityReference.read(tmp_path / "r.json") == ref
    data = json.loads((tmp_path / "r.json").read_text())
    (tmp_path / "future.json").write_text(json.dumps(data | {"format_version": 2}))
    with pytest.raises(BadQualityReference, match=r"future\.json"):
        QualityReference.read(tmp_path / "future.json")
    data["statistics"].pop("sharpness")
    (tmp_path / "short.json").write_text(json.dumps(data))
    with pytest.raises(BadQualityReference, match="statistics"):
        QualityReference.read(tmp_path / "short.json")


def test_a_validation_split_the_weights_trained_on_is_refused_a_held_out_one_is_not():
    with pytest.raises(SplitNotHeldOut, match="reference_split: test"):
        check_held_out("validation", 1.0, 5000, 0.932, 1000)  # the reference WRN-28-10's figures
    check_held_out("validation", 0.935, 5000, 0.93, 1000)  # within sampling
    check_held_out("test", 1.0, 5000, 0.932, 1000)  # a test reference is never refused


def test_the_committed_quality_rules_are_what_params_yaml_says():
    text = quality_rules.render(load_params(ROOT / "params.yaml").monitoring)
    assert (MONITORING / "rules" / "quality.yml").read_text() == text, "run: cifar10 monitor quality-rules"
    with pytest.raises(SystemExit) as done:
        main(["monitor", "quality-rules", "--check", "--params", str(ROOT / "params.yaml")])
    assert done.value.code == 0


def page(confident: int, scored: int, mix: list[int], bins: list[int]) -> str:
    """A /metrics page as the served python models write it, for one version with a reference."""
    labels = 'model="wrn_fp32",version="3"'
    lines = [
        "# TYPE quality_prediction_total counter",
        f"quality_prediction_total{{{labels}}} {scored}",
        "# TYPE confident_prediction_total counter",
        f"confident_prediction_total{{{labels}}} {confident}",
        "# TYPE quality_reference_accuracy gauge",
        f"quality_reference_accuracy{{{labels}}} 0.9",
        "# TYPE quality_reference_class_ratio gauge",
        *(f'quality_reference_class_ratio{{{labels},class="{c}"}} 0.1' for c in CLASSES),
        "# TYPE predicted_class_total counter",
        *(f'predicted_class_total{{{labels},class="{c}"}} {n}' for c, n in zip(CLASSES, mix, strict=True)),
        "# TYPE input_statistic_total counter",
        *(
            f'input_statistic_total{{{labels},statistic="brightness",bin="{b}"}} {n}'
            for b, n in enumerate(bins)
        ),
        "# TYPE input_statistic_reference_ratio gauge",
        *(
            f'input_statistic_reference_ratio{{{labels},statistic="brightness",bin="{b}"}} 0.5'
            for b in (0, 1)
        ),
    ]
    return "\n".join(lines) + "\n"


def test_status_reads_the_estimate_its_interval_the_cap_and_the_drift():
    calm = quality_status.status(quality_status.from_text(page(270, 300, [30] * 10, [150, 150])), CFG)
    (row,) = calm
    assert row.atc == pytest.approx(0.9) and row.class_mix_bound == pytest.approx(1.0)
    assert row.interval[0] < 0.9 < row.interval[1] and not row.alerting(CFG)
    frog = [0] * 6 + [300] + [0] * 3  # sure of every answer, but every answer is "frog"
    (capped,) = quality_status.status(quality_status.from_text(page(300, 300, frog, [300, 0])), CFG)
    assert capped.estimate == pytest.approx(0.1) and capped.accuracy_low(CFG)
    assert not capped.reliable(CFG) and "DRIFT" in quality_status.render([capped], CFG)
    with pytest.raises(quality_status.NothingScored):
        quality_status.status(quality_status.from_text(page(90, 100, [10] * 10, [50, 50])), CFG)
