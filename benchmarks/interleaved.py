"""Side-by-side measurement that a drifting host cannot bias: arms interleaved in short blocks.

On a shared 2-core machine the speed of the host drifts by several percent within a minute (other
tenants, frequency scaling): as much as the few ms a served request adds to a 35 ms inference. Two
figures measured one after the other therefore compare two different machines. Here every arm
(in-process ONNX Runtime, the served ensemble, ...) runs a short block in turn, the order rotated by
one every round, so each arm takes every position and follows every other arm equally often, and
the first calls of each block are dropped (they pay for the previous arm's threads going to sleep).
A difference of medians then compares like with like, and its interval comes from resampling whole
rounds, the unit that shares one state of the host. The interval covers the noise within one run;
a host that changes on longer time scales can move a whole run, so compare runs too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def order(names: list[str], round_: int) -> list[str]:
    """The arms' order in round ``round_``: rotated by one each round."""
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def latency_blocks(
    arms: dict[str, Callable[[int], object]], rounds: int, block: int, discard: int, warmup: int = 5
) -> dict[str, np.ndarray]:
    """Milliseconds per call, ``[rounds, block - discard]`` per arm; each call gets a running index.

    Every arm is called ``warmup`` times first, so none starts the measurement colder than another.
    """
    if block <= discard:
        raise ValueError(f"block ({block}) must exceed discard ({discard})")
    for call in arms.values():
        for i in range(warmup):
            call(i)
    out: dict[str, list[list[float]]] = {name: [] for name in arms}
    index = 0
    for r in range(rounds):
        for name in order(list(arms), r):
            lat = []
            for _ in range(block):
                start = time.perf_counter()
                arms[name](index)
                lat.append((time.perf_counter() - start) * 1e3)
                index += 1
            out[name].append(lat[discard:])
    return {name: np.asarray(rows) for name, rows in out.items()}


def p50_difference(a: np.ndarray, b: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """median(a) - median(b), with a 95 % bootstrap interval over rounds (rows resampled together)."""
    rng = np.random.default_rng(seed)
    rows = a.shape[0]
    diffs = []
    for _ in range(resamples):
        pick = rng.integers(0, rows, rows)
        diffs.append(float(np.median(a[pick]) - np.median(b[pick])))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "ms": round(float(np.median(a) - np.median(b)), 3),
        "ci95_ms": [round(float(low), 3), round(float(high), 3)],
        "calls_each": int(a.size),
    }


def throughput_rounds(arms: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each arm's figure (img/s) per round, the arms' order rotated every round."""
    out: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name in order(list(arms), r):
            out[name].append(round(float(arms[name]()), 2))
    return out


def ratio_summary(numerator: list[float], denominator: list[float]) -> dict:
    """Per-round ratios (paired by round) and their median, min and max."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {
        "median": round(float(np.median(ratios)), 3),
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "per_round": [round(r, 3) for r in ratios],
    }
