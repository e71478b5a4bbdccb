"""Smoke test of the counter-overhead benchmark: two real servers, counter on and off."""

from __future__ import annotations

import pytest

from benchmarks import class_counter as bench
from tests.serving.conftest import triton_or_skip


def test_bench_rejects_bad_options(tmp_path, capsys):
    assert bench.main(["--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX classifier not found" in capsys.readouterr().err
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    assert bench.main(["--onnx", str(model), "--rounds", "0"]) == 2


def test_each_switch_turns_only_its_own_metrics_off(tiny_onnx):
    """The servers run by the benchmark differ in exactly one switch (the run itself: below)."""
    for switch, field in bench.SWITCHES.items():
        for on in (True, False):
            spec = bench.spec_for(tiny_onnx, on, switch)
            assert getattr(spec, field) is on
            other = next(f for f in bench.SWITCHES.values() if f != field)
            assert getattr(spec, other) is True


@pytest.mark.triton
@pytest.mark.full  # 20-minute budget: `make test-full` runs it
def test_bench_runs_both_variants_side_by_side(small_export, tmp_path):
    """Two real servers, the quality counters on and off (the class counter's switch is the same code)."""
    triton_or_skip()
    export_dir, _ = small_export
    report = bench.run_bench(
        export_dir / "model.fp32.onnx", duration_s=0.5, rounds=1, concurrency=2, batch=2, workdir=tmp_path,
        switch="quality", reference=export_dir / "quality" / "fp32" / "quality_reference.json",
    )  # fmt: skip
    assert [r["target"] for r in report["results"]] == ["cifar10", "postprocess"]
    for row in report["results"]:
        assert row["rps_on"] > 0 and row["rps_off"] > 0 and row["errors"] == 0
        assert row["ratio_on_off"] == pytest.approx(row["rps_on"] / row["rps_off"])
    assert all(v and v > 0 for v in report["postprocess_compute_us_per_request"].values())
    on, off = report["counter_series"]["on"], report["counter_series"]["off"]
    assert on >= 6 * 2 and off == 0  # every statistic has at least two bins; off exports none
    assert "input_statistic_total series exported" in bench.render(report)
