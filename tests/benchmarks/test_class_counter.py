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


@pytest.mark.triton
def test_bench_runs_both_variants_side_by_side(tiny_onnx, tmp_path):
    triton_or_skip()
    report = bench.run_bench(tiny_onnx, duration_s=0.5, rounds=1, concurrency=2, batch=2, workdir=tmp_path)
    assert [r["target"] for r in report["results"]] == ["cifar10", "postprocess"]
    for row in report["results"]:
        assert row["rps_on"] > 0 and row["rps_off"] > 0 and row["errors"] == 0
        assert row["ratio_on_off"] == pytest.approx(row["rps_on"] / row["rps_off"])
    # the switch really switches: only the "on" server exports the counter (one series per class)
    assert report["counter_series"] == {"on": 10, "off": 0}
    assert all(v and v > 0 for v in report["postprocess_compute_us_per_request"].values())
    assert "on/off" in bench.render(report)


@pytest.mark.triton
def test_bench_switches_the_quality_metrics(small_export, tmp_path):
    triton_or_skip()
    export_dir, _ = small_export
    report = bench.run_bench(
        export_dir / "model.fp32.onnx", duration_s=0.5, rounds=1, concurrency=2, batch=2, workdir=tmp_path,
        switch="quality", reference=export_dir / "quality" / "fp32" / "quality_reference.json",
    )  # fmt: skip
    assert all(row["errors"] == 0 and row["rps_on"] > 0 and row["rps_off"] > 0 for row in report["results"])
    on, off = report["counter_series"]["on"], report["counter_series"]["off"]
    assert on >= 6 * 2 and off == 0  # every statistic has at least two bins; off exports none
    assert "input_statistic_total series exported" in bench.render(report)
