"""A batch keeps going through a server restart or crash and still accounts for every image exactly once.

A crash (SIGKILL) differs from a restart (SIGTERM, Triton drains in-flight requests first): requests
in flight are cut, and the client retries them. An image whose response was lost after the server
computed it is therefore computed twice, and a server that survived the broken connection counts it
twice in ``nv_inference_*``; the client's own output still has it once.
"""

from __future__ import annotations

import threading
import time

import pytest

from client.core import images
from client.core.request_loop import RetryPolicy
from client.core.transport import Endpoint
from client.jobs.folder_batch import BatchConfig, run_batch, write_outputs
from common import prom_text as promscrape
from tests.client.conftest import start_server
from tests.client.test_batch import read_rows

pytestmark = pytest.mark.triton
N = 120


def _answered(metrics_url: str) -> float:
    snap = promscrape.scrape(metrics_url, timeout_s=2)
    wanted = ("nv_inference_request_success", (("model", "cifar10"), ("version", "1")))
    return snap.samples.get(wanted, 0.0)


@pytest.mark.parametrize(
    ("protocol", "how"),
    [
        ("http", "sigkill"),  # a crash mid-batch; `make test-full` runs the other three pairings
        pytest.param("grpc", "sigterm", marks=pytest.mark.full),
        pytest.param("http", "sigterm", marks=pytest.mark.full),
        pytest.param("grpc", "sigkill", marks=pytest.mark.full),
    ],
)
def test_batch_survives_server_restart(tritonserver, tiny_onnx, tmp_path, protocol, how):
    import os
    import signal

    from serving.server.embedded import EmbeddedServer

    server = start_server(tritonserver, tiny_onnx, tmp_path)
    restarted = None
    try:
        cfg = BatchConfig(
            endpoint=Endpoint(protocol, server.http_endpoint, server.url_grpc, request_timeout_s=10),
            concurrency=4,
            retry=RetryPolicy(deadline_s=60),
            metrics_url=server.url_metrics,
            max_rps=30,  # ~4 s of traffic: long enough to restart in the middle
            progress=False,
            request_batch=1,  # 120 requests to pace (test_units covers retries of shared requests)
        )
        items = images.synthetic(N, seed=7)
        outcome: list = []
        worker = threading.Thread(target=lambda: outcome.append(run_batch(items, cfg)), daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while _answered(server.url_metrics) < 25:
            assert time.monotonic() < deadline, "the batch never got going"
            time.sleep(0.05)
        if how == "sigkill":  # a crash: in-flight requests are cut mid-way
            os.kill(server.triton_pid, signal.SIGKILL)
            server.process.wait(timeout=30)
        server.stop(grace=15)  # SIGTERM: Triton drains, then exits; clients see refused connections
        time.sleep(1.0)
        restarted = EmbeddedServer(server.config)  # same ports, same repository
        restarted.start()
        restarted.wait_ready(timeout=120)
        worker.join(timeout=120)
        assert not worker.is_alive() and outcome, "the batch did not finish"
    finally:
        for s in (restarted, server):
            if s is not None:
                s.stop(grace=10)

    result = outcome[0]
    summary = result.summary
    print(f"{protocol}/{how}: retries by type {summary['retries_by_type']}, counts {summary['counts']}")
    paths = [r.path for r in result.records]
    assert len(paths) == N and len(set(paths)) == N  # every image once, no duplicates
    assert [r.status for r in result.records] == ["ok"] * N, [r.error for r in result.records if r.error]
    counts = result.summary["counts"]
    assert counts["ok"] == N and counts["retried_images"] > 0  # the restart was noticed and ridden out
    assert set(result.summary["retries_by_type"]) & {"connection_refused", "disconnected"}
    assert result.summary["server_metrics"]["connection_lost"] is True  # its counters started over
    out = tmp_path / "out"
    write_outputs(result, out)
    rows = read_rows(out)
    assert len(rows) == N and len({r["path"] for r in rows}) == N
    assert sum(int(r["attempts"]) > 1 for r in rows) == counts["retried_images"]
