"""A release step's latency figure, from the router's histogram of its calls to each version.

What a client waits for at the classifier step is the router's BLS call to the version that answers
it; the router times every call, once per call (``release_route_latency_ms{model, version, path}``,
:mod:`serving.triton.python_models.router`): the requests of one dynamic batch share one wait, so
they count as one sample, not as many. Both versions are read over one interval - the
step's window, from ``latency_settle_s`` after the step's rollout - so both see the same traffic, the
same dynamic batches and the same host. ``model_warmup`` executions are sent by Triton straight to the
classifier and never pass through the router, so a load, a sync or a rollback cannot appear here.

In the shadow step the candidate's calls are the shadow copies (``path="shadow"``), which run after
the caller's answer, batched as production's were; from the first canary step on, its ``served``
calls. Production is always its ``served`` calls; when it answers nothing in the window (a canary of
100 %), its figures over the whole release stand in, then those of the step before.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from common.params import ReleaseConfig
from common.promql import Prometheus
from release.figures import Figure, interval, selector

if TYPE_CHECKING:
    from release.judge import Step

METRIC = "release_route_latency_ms"
SLOW_SHARE = 0.01  # a p99 above the limit means more than this share of requests above it

Histogram = list[tuple[float, float]]  # (upper edge in ms, cumulative count), edges rising, +Inf last


def histogram(prom: Prometheus, model: str, version: int, path: str, window: str) -> Histogram:
    query = f'sum by (le) (increase({METRIC}_bucket{{{selector(model, version)},path="{path}"}}[{window}]))'
    rows = [
        (math.inf if labels.get("le") == "+Inf" else float(labels["le"]), v)
        for labels, v in prom.query(query)
    ]
    return sorted(rows)


def total(hist: Histogram) -> float:
    return hist[-1][1] if hist else 0.0


def bucket_edge(hist: Histogram, q: float) -> float | None:
    """The upper edge of the bucket holding the ``q`` quantile: an upper bound on it."""
    n = total(hist)
    if n <= 0:
        return None
    return next(edge for edge, count in hist if count >= q * n)


def quantile(hist: Histogram, q: float) -> float | None:
    """The ``q`` quantile, interpolated within its bucket as PromQL's ``histogram_quantile`` does."""
    n = total(hist)
    if n <= 0:
        return None
    rank, lower, below = q * n, 0.0, 0.0
    for edge, count in hist:
        if count >= rank:
            if math.isinf(edge):
                return lower
            inside = count - below
            return lower + (edge - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = edge, count
    return lower


def slower_than(hist: Histogram, limit_ms: float) -> float:
    """Requests certainly slower than ``limit_ms``: those above the first edge at or past it."""
    edge_count = next((count for edge, count in hist if edge >= limit_ms), total(hist))
    return max(0.0, total(hist) - edge_count)


def figure(
    prom: Prometheus, step: Step, cfg: ReleaseConfig, now: float, baseline_p99_ms: float | None
) -> tuple[Figure, float | None]:
    """The ``p99_ms`` figure and production's p99 bound (ms) for the next check to fall back on."""
    settled = now - max(step.latency_since, step.started_at)
    if settled < 1.0:
        return Figure(
            "p99_ms", None, None, False, False, "settling after the step's rollout"
        ), baseline_p99_ms
    window = f"{math.ceil(settled)}s"
    (cm, cv), (pm, pv) = step.candidate, step.production
    candidate = histogram(prom, cm, cv, "shadow" if step.shadow else "served", window)
    production = histogram(prom, pm, pv, "served", window)
    source = "this step"
    if total(production) <= 0:  # production answers nothing now (canary 100 %): the whole release
        whole = f"{max(math.ceil(now - step.release_started_at), 2)}s"
        production, source = histogram(prom, pm, pv, "served", whole), "the release so far"
    production_p99 = bucket_edge(production, 0.99)
    if production_p99 is None and baseline_p99_ms is not None:
        production_p99, source = baseline_p99_ms, "an earlier step"
    n = total(candidate)
    value = quantile(candidate, 0.99)
    if production_p99 is None:
        detail = f"{n:.0f} candidate requests; production's latency unknown yet"
        return Figure("p99_ms", value, None, False, False, detail), baseline_p99_ms
    limit = production_p99 * cfg.max_p99_ratio + cfg.p99_slack_ms
    slow = slower_than(candidate, limit)
    low, _ = interval(slow, n, cfg.confidence_z)
    judged = n >= cfg.latency_min_requests
    detail = (
        f"production p99 <= {production_p99:.4g} ms ({source}); {slow:.0f} of {n:.0f} candidate calls "
        f"slower than the limit, since {settled:.0f} s"
        + ("" if judged else f"; may breach from {cfg.latency_min_requests} calls")
    )
    breached = judged and low > SLOW_SHARE
    within = value is not None and value <= limit
    return Figure("p99_ms", value, limit, breached, within, detail), production_p99
