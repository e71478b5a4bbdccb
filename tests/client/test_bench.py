"""``client bench`` against a real Triton: a sane report, a plot, and proof the generator is not the limit."""

from __future__ import annotations

import json

import pytest

from tests.client.test_cli import run_cli

pytestmark = pytest.mark.triton


@pytest.mark.full  # 20-minute budget: `make test-full` runs it
def test_bench_sweep_report_is_sane(triton, tmp_path, capsys):
    code = run_cli([
        "bench", "--url", triton.http_endpoint, "--grpc-url", triton.url_grpc, "--timeout", "10",
        "--protocols", "http,grpc", "--modes", "bytes,tensor", "--concurrency", "1,2",
        "--duration", "0.8", "--warmup", "0.2", "--self-test", "--self-test-duration", "0.5",
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
    # Speed is not asserted here (it depends on the machine and its load); the reading of it is,
    # in test_notes_read_saturation_from_the_numbers below. Each series gets its capacity note.
    for protocol in ("http", "grpc"):
        for mode in ("bytes", "tensor"):
            series = f"{protocol}/{mode}"
            assert any(n.startswith(f"{series}: the generator's own capacity") for n in report["notes"])
    out = capsys.readouterr().out
    assert "note:" in out and "bench.json" in out


def _row(protocol: str, concurrency: int, rps: float, p99: float) -> dict:
    return {
        "protocol": protocol, "mode": "bytes", "concurrency": concurrency, "throughput_rps": rps,
        "latency_ms": {"p99": p99}, "client_cpu_cores": 0.1, "client_cpu_ms_per_request": 0.5, "errors": {},
    }  # fmt: skip


def test_notes_read_saturation_from_the_numbers():
    from client.tools.load_bench import notes

    server = [
        _row("http", 1, 100.0, 10.0), _row("http", 2, 180.0, 11.0), _row("http", 4, 181.0, 22.0),
        _row("grpc", 1, 100.0, 10.0), _row("grpc", 2, 190.0, 10.5),
    ]  # fmt: skip
    stub = [_row(p, c, 1000.0, 1.0) for p in ("http", "grpc") for c in (1, 2, 4)]
    text = notes(server, stub)
    saturated = [n for n in text if "saturated" in n]
    assert saturated == [
        "http/bytes: saturated at concurrency 2: going to 4 changed throughput 180.0 -> 181.0 req/s "
        "while p99 went 11.0 -> 22.0 ms (requests queue on the server)"
    ]
    capacity = [n for n in text if "generator's own capacity" in n]
    assert any(n.startswith("http/bytes") and ">= 5.5x" in n and "concurrency 4" in n for n in capacity)
    assert any(n.startswith("grpc/bytes") and ">= 5.3x" in n for n in capacity)
