"""The optimizer's objective: fastest within the p99 budget and the accuracy margin, never a guess."""

from __future__ import annotations

import pytest

from common.params import OptimizeConfig
from optimize.objective import Candidate, Row, grid, judge

CFG = OptimizeConfig(p99_budget_ms=100.0, accuracy_margin=0.005)


def row(
    precision: str, img_s: float, p99: float | None, acc: float | None, errors: int = 0, count: int = 1
) -> Row:
    return Row(Candidate(precision, (), 0, count), 1, acc, img_s, 1.0, p99, errors)


def test_the_fastest_row_within_budget_and_margin_wins():
    rows = [
        row("fp32", 40.0, 50.0, 0.932),
        row("int8", 130.0, 60.0, 0.930),  # 0.2 points below fp32: within 0.5
        row("fp16", 20.0, 90.0, 0.932),
    ]
    best = judge(rows, CFG, baseline_accuracy=0.932)
    assert best is rows[1] and all(r.feasible for r in rows)


@pytest.mark.parametrize(
    "fast, reason",
    [
        (row("int8", 500.0, 50.0, 0.926), "accuracy 0.9260 < fp32 0.9320 - 0.005"),
        (row("int8", 500.0, 150.0, 0.932), "p99 150.0 ms > budget 100.0 ms"),
        (row("int8", 500.0, None, 0.932), "p99 None ms > budget"),
        (row("int8", 500.0, 50.0, None), "test accuracy unknown"),
        (row("int8", 500.0, 50.0, 0.932, errors=3), "3 failed requests"),
    ],
)
def test_a_faster_row_that_breaks_a_rule_is_not_chosen(fast, reason):
    safe = row("fp32", 40.0, 50.0, 0.932)
    assert judge([fast, safe], CFG, baseline_accuracy=0.932) is safe
    assert not fast.feasible and reason in fast.reason


def test_no_feasible_row_means_no_choice():
    rows = [row("int8", 100.0, 500.0, 0.93)]
    assert judge(rows, CFG, 0.93) is None
    assert judge([row("fp32", 100.0, 50.0, 0.93)], CFG, baseline_accuracy=None) is None  # no fp32 figure


def test_grid_skips_preferred_sizes_an_artifact_cannot_take():
    cfg = OptimizeConfig(
        preferred_batch_sizes=((), (8, 32)), max_queue_delay_us=(0, 500), instance_counts=(1,)
    )
    cands = grid(cfg, ["fp32", "trt_fp16"], {"fp32": 256, "trt_fp16": 16})
    assert len([c for c in cands if c.precision == "fp32"]) == 4
    assert {c.preferred_batch_sizes for c in cands if c.precision == "trt_fp16"} == {()}


def test_params_refuse_an_empty_or_negative_grid():
    with pytest.raises(ValueError, match="need values"):
        OptimizeConfig(instance_counts=())
    with pytest.raises(ValueError, match=r"optimize.max_queue_delay_us\[0\]: expected int >= 0"):
        OptimizeConfig(max_queue_delay_us=(-1,))
