"""CLI behaviour that needs no server: usage errors, unreachable servers, the stub self-test."""

from __future__ import annotations

import json
import time

import pytest

from tests.client.conftest import free_port


def run_cli(argv: list[str]) -> int:
    """``cifar10 client ARGV`` in-process; returns the exit code."""
    from commands.main import main

    with pytest.raises(SystemExit) as exc:
        main(["client", *argv])
    return exc.value.code


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_server_exits_3_quickly(protocol, tmp_path, labelled_images, capsys):
    port = free_port()  # nothing listens here
    t0 = time.monotonic()
    code = run_cli([
        "batch", "--images", str(labelled_images), "--protocol", protocol,
        "--url", f"127.0.0.1:{port}", "--grpc-url", f"127.0.0.1:{port}", "--metrics-url", "",
        "--timeout", "1", "--no-progress", "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert code == 3
    # A refused connection is not retried for the 60 s default deadline: the run ends within a few
    # multiples of --timeout (a bound on behaviour, far from any machine's speed).
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "unreachable" in err[-1]
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert run_cli(["batch", "--images", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert run_cli(["bench", "--concurrency", "0,1"]) == 2  # argparse rejects it
    assert run_cli(["batch"]) == 2  # neither --images nor --random


def test_bench_self_test_only_measures_the_generator(tmp_path, capsys):
    code = run_cli([
        "bench", "--self-test-only", "--protocols", "http,grpc", "--modes", "bytes",
        "--concurrency", "1,4", "--self-test-duration", "0.5", "--warmup", "0.1",
        "--out", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["results"] == [] and len(report["self_test"]) == 4
    for row in report["self_test"]:
        assert row["target"] == "stub" and row["errors"] == {}
        assert row["requests"] > 0 and row["throughput_rps"] > 0, row
    assert (tmp_path / "bench.png").stat().st_size > 1000
