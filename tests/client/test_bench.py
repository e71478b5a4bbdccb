"""``client bench`` against a real Triton: a sane report, a plot, and proof the generator is not the limit."""

from __future__ import annotations

import json

import pytest

from tests.client.test_cli import run_cli

pytestmark = pytest.mark.triton


def test_bench_sweep_report_is_sane(triton, tmp_path, capsys):
    code = run_cli([
        "bench", "--url", triton.http_endpoint, "--grpc-url", triton.url_grpc, "--timeout", "10",
        "--protocols", "http,grpc", "--modes", "bytes,tensor", "--concurrency", "1,2",
        "--duration", "1.5", "--warmup", "0.3", "--self-test", "--self-test-duration", "0.5",
        "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 1000
    rows = report["results"]
    assert {(r["protocol"], r["mode"]) for r in rows} == {
        (p, m) for p in ("http", "grpc") for m in ("bytes", "tensor")
    }
    assert len(rows) == 8 and len(report["self_test"]) == 8
    for r in rows:
        assert r["errors"] == {} and r["requests"] > 0 and r["throughput_rps"] > 0, r
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["client_cpu_ms_per_request"] > 0
    notes = report["notes"]
    for protocol in ("http", "grpc"):
        for mode in ("bytes", "tensor"):
            by_c = {r["concurrency"]: r for r in rows if (r["protocol"], r["mode"]) == (protocol, mode)}
            series = f"{protocol}/{mode}"
            # Two requests in flight should not be slower than one - unless the report explains why.
            explained = any(n.startswith(f"{series}: saturated at concurrency 1") for n in notes)
            assert by_c[2]["throughput_rps"] >= by_c[1]["throughput_rps"] or explained, (by_c, notes)
            # The generator's own ceiling (instant stub server) lies above every measurement.
            assert any(n.startswith(f"{series}: the generator's own capacity") for n in notes), notes
            # (Its best level, since the stub shares these 2 cores with the generator and is noisy.)
            ceiling = max(
                r["throughput_rps"]
                for r in report["self_test"]
                if (r["protocol"], r["mode"]) == (protocol, mode)
            )
            assert all(ceiling > r["throughput_rps"] for r in by_c.values()), (ceiling, by_c)
    out = capsys.readouterr().out
    assert "note:" in out and "bench.json" in out
