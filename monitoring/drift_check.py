"""One drift check: counts from a source (Triton's ``/metrics`` or Prometheus), judged against the
reference, as a verdict and its JSON report. :mod:`monitoring.drift` holds the reading and the
arithmetic; the command is ``cifar10 monitor drift`` (also ``cifar10 client drift``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from common.exit_codes import UsageError
from monitoring.drift import (
    DEFAULT_METRICS_URL,
    DEFAULT_MIN_COUNT,
    DEFAULT_REFERENCE,
    DEFAULT_THRESHOLD,
    EPSILON,
    Counts,
    DriftResult,
    delta,
    evaluate,
    load_reference,
    query_prometheus,
    scrape,
)


class DriftUsage(UsageError):
    """Settings that cannot name what to compare (exit code 2)."""


@dataclass(frozen=True)
class CountSource:
    """Where the counts come from: Prometheus' ``increase()`` over ``prometheus_range`` if
    ``prometheus`` is set, else ``metrics_url`` (cumulative, or the change over ``window_s``)."""

    metrics_url: str = DEFAULT_METRICS_URL
    prometheus: str | None = None
    prometheus_range: str = "30m"
    window_s: float = 0.0
    timeout_s: float = 5.0
    model: str | None = None  # only this classifier
    version: str | None = None  # only this version


@dataclass(frozen=True)
class DriftSettings:
    source: CountSource = CountSource()
    reference: Path = DEFAULT_REFERENCE
    threshold: float = DEFAULT_THRESHOLD
    min_count: float = DEFAULT_MIN_COUNT
    epsilon: float = EPSILON


class ClassCount(TypedDict):
    reference: float  # the class's share in the reference
    count: float  # predictions of the class counted


class VersionDrift(TypedDict):
    model: str
    version: str
    predictions: float
    psi: float | None  # None: too few predictions, not judged
    chi_square_p: float | None
    drift: bool
    classes: dict[str, ClassCount]


class DriftReport(TypedDict):
    """``--json``: the verdict with its settings, one entry per model version."""

    source: str
    reference: str
    threshold: float
    min_count: float
    drift: bool
    results: list[VersionDrift]


@dataclass(frozen=True)
class DriftVerdict:
    source: str  # where the counts came from, in one line
    reference: dict[str, float]
    results: list[DriftResult]
    drifted: bool  # some judged model version is above the threshold


def collect(source: CountSource) -> tuple[Counts, str]:
    """The counts ``source`` names, and a one-line description of where they came from."""
    if source.prometheus:
        counts = query_prometheus(source.prometheus, source.prometheus_range, source.timeout_s)
        where = f"Prometheus {source.prometheus}, increase over {source.prometheus_range}"
    elif source.window_s > 0:
        before = scrape(source.metrics_url, source.timeout_s)
        time.sleep(source.window_s)
        counts = delta(before, scrape(source.metrics_url, source.timeout_s))
        where = f"{source.metrics_url}, change over {source.window_s:g} s"
    else:
        counts = scrape(source.metrics_url, source.timeout_s)
        where = f"{source.metrics_url}, cumulative since server start"
    counts = {
        g: v
        for g, v in counts.items()
        if (source.model is None or g[0] == source.model)
        and (source.version is None or g[1] == source.version)
    }
    return counts, where


def check(settings: DriftSettings) -> DriftVerdict:
    """Read the reference and the counts, and judge them; raises :class:`~common.exit_codes.ExitError`
    subclasses (bad settings or reference 2, source unreachable 3, too few predictions 7)."""
    if settings.threshold < 0 or settings.epsilon <= 0 or settings.source.window_s < 0:
        raise DriftUsage("--threshold and --window must be >= 0 and --epsilon > 0")
    reference = load_reference(settings.reference)
    counts, where = collect(settings.source)
    results = evaluate(counts, reference, settings.min_count, settings.epsilon)
    drifted = any(r.drifted(settings.threshold) for r in results)
    return DriftVerdict(where, reference, results, drifted)


def report(settings: DriftSettings, verdict: DriftVerdict) -> DriftReport:
    """The verdict as the JSON report: per model version, its PSI, p-value and counts by class."""
    return {
        "source": verdict.source,
        "reference": str(settings.reference),
        "threshold": settings.threshold,
        "min_count": settings.min_count,
        "drift": verdict.drifted,
        "results": [
            {
                "model": r.model,
                "version": r.version,
                "predictions": r.predictions,
                "psi": r.psi,
                "chi_square_p": r.p_value,
                "drift": r.drifted(settings.threshold),
                "classes": {
                    c: {"reference": q, "count": r.observed.get(c, 0.0)} for c, q in verdict.reference.items()
                },
            }
            for r in verdict.results
        ],
    }
