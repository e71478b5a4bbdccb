"""Client pieces that need no server: discovery, preprocessing, error taxonomy, retries, metrics diff."""

from __future__ import annotations

import asyncio
import csv
import io
import time

import numpy as np
import pytest
from PIL import Image
from tritonclient.utils import InferenceServerException

from client.core import images
from client.core.errors import BadInput
from client.core.request_loop import RetryPolicy, run_all
from client.core.transport import classify
from common import prom_text as promscrape
from tests.conftest import CLASSES

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FAST = RetryPolicy(deadline_s=2.0, initial_backoff_s=0.01, max_backoff_s=0.05)


def test_discover_labelled_flat_and_bad_layout(tmp_path, labelled_images):
    items = images.discover(labelled_images)
    assert len(items) == 40 and {i.label for i in items} == set(CLASSES)
    assert len(images.discover(labelled_images, per_class=2)) == 20
    sample = images.discover(labelled_images, limit=7, seed=3)
    assert len(sample) == 7 and sample == images.discover(labelled_images, limit=7, seed=3)

    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes((labelled_images / "cat" / "0001.png").read_bytes())
    assert [i.label for i in images.discover(flat)] == [None]

    (tmp_path / "bad" / "giraffe").mkdir(parents=True)
    (tmp_path / "bad" / "giraffe" / "g.png").write_bytes(b"x")
    with pytest.raises(BadInput, match="giraffe"):
        images.discover(tmp_path / "bad", classes=CLASSES)
    assert [i.label for i in images.discover(tmp_path / "bad")] == ["giraffe"]  # checked against the server
    with pytest.raises(BadInput, match="not found"):
        images.discover(tmp_path / "missing")


def test_to_tensor_matches_the_documented_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    x = images.to_tensor(buf.getvalue(), MEAN, STD)
    expected = (rgb.transpose(2, 0, 1) / 255.0 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x, expected, atol=1e-5)
    big = io.BytesIO()
    Image.fromarray(rgb).resize((64, 48)).save(big, "JPEG")
    assert images.to_tensor(big.getvalue(), MEAN, STD).shape == (3, 32, 32)


def test_unreadable_and_unsupported_images():
    with pytest.raises(images.UnreadableImage, match="empty"):
        images.check_encoded(b"")
    with pytest.raises(images.UnreadableImage, match="PNG/JPEG"):
        images.check_encoded(b"hello world")
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(images.UnreadableImage):
        images.check_encoded(gif.getvalue())  # the server's preprocess only decodes PNG/JPEG
    assert images.to_tensor(gif.getvalue(), MEAN, STD).shape == (3, 32, 32)  # tensor mode decodes it here


def test_softmax_topk_ranks_like_the_server():
    order, probs = images.softmax_topk(np.array([1.0, 3.0, 2.0, 3.0]), 3)
    assert order.tolist() == [1, 3, 2]  # ties: lower index first, as argmax
    assert probs[0] == pytest.approx(np.exp(3) / np.exp([1, 3, 2, 3]).sum(), rel=1e-6)


@pytest.mark.parametrize(
    ("exc", "kind", "transient"),
    [
        (InferenceServerException("bad image", status="400"), "invalid_argument", False),
        (InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT"), "invalid_argument", False),
        (InferenceServerException("no such version", status="404"), "not_found", False),
        (InferenceServerException("busy", status="503"), "unavailable", True),
        (InferenceServerException("x", status="StatusCode.UNAVAILABLE"), "unavailable", True),
        (InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED"), "timeout", True),
        (InferenceServerException("Server is stopping, ...", status="400"), "unavailable", True),
        (
            InferenceServerException("unknown model: 'cifar10' has no available versions", status="404"),
            "unavailable",
            True,
        ),
        (
            InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE"),
            "connection_refused",
            True,
        ),
        (ConnectionRefusedError("nope"), "connection_refused", True),
        (TimeoutError(), "timeout", True),
        (ValueError("bug"), "client_ValueError", False),
    ],
)
def test_classify(exc, kind, transient):
    info = classify(exc)
    assert (info.kind, info.transient) == (kind, transient)


def test_classify_aiohttp_errors():
    import aiohttp

    assert classify(aiohttp.ServerDisconnectedError()).kind == "disconnected"
    assert classify(aiohttp.ServerDisconnectedError()).transient


def one_by_one(send_one):
    """``run_all`` sends lists; these tests think in single items (request_batch 1)."""

    async def send(batch: list) -> list:
        assert len(batch) == 1
        return [await send_one(batch[0])]

    return send


def _run(items, send, concurrency=4, policy=FAST):
    return asyncio.run(run_all(items, lambda i: i, one_by_one(send), concurrency, policy))


def test_engine_retries_transient_then_succeeds_exactly_once():
    calls: dict[int, int] = {}

    async def send(i: int) -> int:
        calls[i] = calls.get(i, 0) + 1
        if i % 3 == 0 and calls[i] < 3:
            raise InferenceServerException("restarting", status="StatusCode.UNAVAILABLE")
        return i * 10

    out = _run(list(range(30)), send)
    assert [o.value for o in out] == [i * 10 for i in range(30)]
    assert all(o.status == "ok" for o in out)
    assert [o.attempts for o in out] == [3 if i % 3 == 0 else 1 for i in range(30)]
    assert out[0].retries["unavailable"] == 2


def test_engine_does_not_retry_permanent_errors_and_gives_up_at_deadline():
    async def send(i: int) -> int:
        if i == 0:
            raise InferenceServerException("bad image", status="400")
        raise ConnectionRefusedError("down")

    t0 = time.monotonic()
    out = _run([0, 1], send, policy=RetryPolicy(deadline_s=0.5, initial_backoff_s=0.01, max_backoff_s=0.05))
    assert (out[0].status, out[0].attempts, out[0].error_kind) == ("error", 1, "invalid_argument")
    assert out[1].status == "error" and out[1].attempts > 3 and "gave up" in out[1].error
    assert time.monotonic() - t0 < 3


def test_engine_skips_items_that_cannot_be_prepared():
    def prepare(i: int) -> int:
        if i == 1:
            raise images.UnreadableImage("not an image file")
        return i

    async def send(i: int) -> int:
        return i

    out = asyncio.run(run_all([0, 1, 2], prepare, one_by_one(send), 2, FAST))
    assert [o.status for o in out] == ["ok", "skipped", "ok"]
    assert out[1].attempts == 0 and "not an image" in out[1].error


def test_request_batching_isolates_a_bad_item_and_answers_each_exactly_once():
    """A permanent failure of a shared request is retried item by item: only the bad one fails."""
    requests: list[list[int]] = []
    seen: list[int] = []

    async def send(batch: list[int]) -> list[int]:
        requests.append(list(batch))
        if 13 in batch:
            raise InferenceServerException("image 13 is not an image", status="400")
        return [i * 10 for i in batch]

    def on_done(i: int, _out) -> None:
        seen.append(i)

    out = asyncio.run(run_all(list(range(30)), lambda i: i, send, 3, FAST, on_done, request_batch=8))
    assert sorted(seen) == list(range(30))  # every item finished exactly once
    assert [o.status for o in out] == ["error" if i == 13 else "ok" for i in range(30)]
    assert [o.value for o in out if o.status == "ok"] == [i * 10 for i in range(30) if i != 13]
    assert out[13].error_kind == "invalid_argument" and "image 13" in out[13].error
    assert out[13].attempts == 2  # the shared request, then its own
    assert max(len(r) for r in requests) == 8 and [8, 9, 10, 11, 12, 13, 14, 15] in requests
    assert [r for r in requests if len(r) == 1] == [[i] for i in range(8, 16)]  # only that chunk split


def test_request_batching_retries_a_transient_failure_as_one_request():
    calls = {"n": 0}

    async def send(batch: list[int]) -> list[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise InferenceServerException("restarting", status="StatusCode.UNAVAILABLE")
        return list(batch)

    out = asyncio.run(run_all(list(range(5)), lambda i: i, send, 1, FAST, request_batch=5))
    assert calls["n"] == 2 and [o.value for o in out] == list(range(5))
    assert all(o.attempts == 2 and o.retries["unavailable"] == 1 for o in out)


def test_request_batching_gives_up_on_a_dead_server_without_splitting():
    calls = {"n": 0}

    async def send(batch: list[int]) -> list[int]:
        calls["n"] += 1
        raise ConnectionRefusedError("down")

    policy = RetryPolicy(deadline_s=0.3, initial_backoff_s=0.01, max_backoff_s=0.05)
    out = asyncio.run(run_all(list(range(4)), lambda i: i, send, 1, policy, request_batch=4))
    assert all(o.status == "error" and o.transient and "gave up" in o.error for o in out)
    assert calls["n"] == out[0].attempts  # never retried item by item: the server, not an item, failed


METRICS_BEFORE = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="cifar10",version="1"} 10
# HELP predicted_class_total Predictions
# TYPE predicted_class_total counter
predicted_class_total{class="cat",model="wrn_fp32",version="2"} 4
predicted_class_total{class="dog",model="wrn_fp32",version="2"} 6
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization 0.5
"""


def test_metrics_delta_and_counter_reset():
    before = promscrape.Snapshot(promscrape.parse(METRICS_BEFORE))
    after_text = METRICS_BEFORE.replace("} 10", "} 25").replace("} 4", "} 9")
    d = promscrape.delta(before, promscrape.Snapshot(promscrape.parse(after_text)))
    assert d["counters"]["nv_inference_request_success"] == {"model=cifar10,version=1": 15.0}
    assert d["predicted_class_total_by_class"] == {"cat": 5.0}
    assert d["counter_reset"] is False
    restarted = promscrape.Snapshot(promscrape.parse(METRICS_BEFORE.replace("} 10", "} 3")))
    d = promscrape.delta(before, restarted)
    assert d["counter_reset"] is True and d["counters"]["nv_inference_request_success"] == {
        "model=cifar10,version=1": 3.0
    }
    assert promscrape.delta(before, promscrape.Snapshot(error="down"))["available"] is False
    assert promscrape.scrape("http://127.0.0.1:9/metrics", timeout_s=1).error


def test_confusion_command_from_csv(tmp_path, capsys):
    from tests.client.test_cli import run_cli

    path = tmp_path / "predictions.csv"
    rows = [("cat", "cat", "ok"), ("cat", "dog", "ok"), ("dog", "dog", "ok"), ("dog", "", "error")]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true_label", "predicted_label", "probability", "latency_ms", "status", "error"])
        for i, (t, p, s) in enumerate(rows):
            w.writerow([f"{i}.png", t, p, "0.9" if p else "", "1.0", s, ""])
    assert run_cli(["confusion", "--csv", str(path)]) == 0
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert "accuracy 66.67% (n=3)" in capsys.readouterr().out
    empty = tmp_path / "empty.csv"
    empty.write_text("path,true_label,predicted_label,status\n")
    assert run_cli(["confusion", "--csv", str(empty)]) == 2


def test_oversized_files_are_refused_before_they_are_read_or_decoded(tmp_path):
    from client.core.images import MAX_IMAGE_BYTES, ImageItem, UnreadableImage, check_encoded, to_tensor
    from tests.conftest import huge_png

    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(MAX_IMAGE_BYTES + 1)  # sparse: nothing is read to find out
    with pytest.raises(UnreadableImage, match="too large: 1,048,577 bytes > 1,048,576"):
        ImageItem(str(big)).read()
    for blob, message in (
        (huge_png(5_000, 5_000), "too large: 5000x5000 pixels > 16,777,216"),  # our limit
        (huge_png(40_000, 40_000), "too large: Image size"),  # beyond PIL's own: refused at open()
    ):
        for check in (check_encoded, lambda b: to_tensor(b, MEAN, STD)):
            with pytest.raises(UnreadableImage, match=message):
                check(blob)
