"""The interleaving behind the serving benchmarks: order, pairing by round and its interval."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import interleaved


def test_every_arm_takes_every_position_and_follows_every_other_arm():
    calls: list[str] = []
    arms = {name: (lambda i, n=name: calls.append(n)) for name in "abc"}
    lat = interleaved.latency_blocks(arms, rounds=3, block=2, discard=1, warmup=0)
    assert calls == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a", "b", "b"]
    assert {name: rows.shape for name, rows in lat.items()} == {n: (3, 1) for n in "abc"}


def test_warmup_calls_every_arm_before_measuring_and_block_must_exceed_discard():
    calls: list[str] = []
    arms = {name: (lambda i, n=name: calls.append(n)) for name in "ab"}
    interleaved.latency_blocks(arms, rounds=1, block=1, discard=0, warmup=2)
    assert calls[:4] == ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="must exceed"):
        interleaved.latency_blocks(arms, rounds=1, block=2, discard=2)


def test_difference_pairs_rounds_so_a_shift_shared_by_both_arms_cancels():
    rng = np.random.default_rng(0)
    host = rng.normal(30.0, 3.0, size=(20, 1)) + rng.normal(0, 0.1, size=(20, 10))  # drift per round
    served = host + 2.0
    out = interleaved.p50_difference(served, host)
    assert out["ms"] == pytest.approx(2.0, abs=1e-9)
    assert out["ci95_ms"] == [pytest.approx(2.0, abs=1e-9)] * 2  # every resample pairs the same rows
    assert out["calls_each"] == 200


def test_ratio_summary_pairs_by_round():
    out = interleaved.ratio_summary([30.0, 40.0, 45.0], [30.0, 50.0, 45.0])
    assert out["per_round"] == [1.0, 0.8, 1.0]
    assert (out["median"], out["min"], out["max"]) == (1.0, 0.8, 1.0)


def test_throughput_rounds_rotate_the_order():
    calls: list[str] = []
    arms = {name: (lambda n=name: calls.append(n) or 1.0) for name in "ab"}
    assert interleaved.throughput_rounds(arms, 3) == {"a": [1.0, 1.0, 1.0], "b": [1.0, 1.0, 1.0]}
    assert calls == ["a", "b", "b", "a", "a", "b"]
