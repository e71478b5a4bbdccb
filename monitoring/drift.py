"""Drift of the served prediction mix against the validation split's class distribution.

Labels never come back from production, but the arg-max class of every prediction does: Triton's
postprocess model counts them in ``predicted_class_total{model, version, class}``. When the mix of
predicted classes moves away from the class mix the model was validated on, either the input
population or the model changed, and that is worth a look before accuracy is measured again.

The score is the population stability index, ``PSI = sum_c (p_c - q_c) * ln(p_c / q_c)`` with ``p``
the observed and ``q`` the reference shares, both clamped at ``epsilon`` so an empty class gives a
large but finite term. The customary reading is < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant,
hence the default threshold. Without drift ``n * PSI`` is roughly chi-square with ``classes - 1``
degrees of freedom, so a handful of predictions scores high by chance; ``--min-count`` (default 200,
as in the Prometheus alert) keeps such noise from failing a check. The chi-square p-value is printed
beside it where SciPy is installed.

Counts come from Triton's ``/metrics`` (cumulative since start, or the change over ``--window``
seconds) or from Prometheus (``increase()`` over ``--range``, the same numbers the alert rule in
``monitoring/rules/drift.yml`` sees). One check end to end is :mod:`monitoring.drift_check`; the
command is ``cifar10 monitor drift``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import prom_text
from common.exit_codes import TooLittleData, UsageError
from common.promql import Prometheus, PrometheusUnavailable, fetch

METRIC = "predicted_class_total"
DEFAULT_METRICS_URL = "http://localhost:8002/metrics"
DEFAULT_REFERENCE = Path("data/prepared/meta.json")
DEFAULT_THRESHOLD = 0.2
DEFAULT_MIN_COUNT = 200
EPSILON = 1e-4
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
Group = tuple[str, str]  # (model, version)
Counts = dict[Group, dict[str, float]]


class BadReference(UsageError):
    """The reference distribution cannot be read, or misses served classes (exit code 2)."""


class TooFewPredictions(TooLittleData):
    """Nothing (or too little) to judge yet (exit code 7)."""


def load_reference(path: Path) -> dict[str, float]:
    """Class -> share from ``meta.json`` (``classes`` + ``val_class_distribution``), normalised to 1.

    ``val_class_distribution`` may also be a ``{class: share}`` mapping; a bare list of ten shares
    without ``classes`` is read in CIFAR-10 order.
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadReference(f"reference file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise BadReference(f"reference file {path} is not readable JSON: {exc}") from None
    dist = data.get("val_class_distribution") if isinstance(data, dict) else None
    if isinstance(dist, list):
        classes = data.get("classes") or (CIFAR10_CLASSES if len(dist) == len(CIFAR10_CLASSES) else None)
        if classes is None or len(classes) != len(dist):
            raise BadReference(f"{path}: 'classes' and 'val_class_distribution' differ in length")
        dist = dict(zip(classes, dist, strict=True))
    if not isinstance(dist, dict) or len(dist) < 2:
        raise BadReference(f"{path}: no 'val_class_distribution' with at least two classes")
    try:
        shares = {str(k): float(v) for k, v in dist.items()}
    except (TypeError, ValueError):
        raise BadReference(f"{path}: 'val_class_distribution' holds non-numbers") from None
    total = sum(shares.values())
    if any(not math.isfinite(v) or v < 0 for v in shares.values()) or not 0.99 <= total <= 1.01:
        raise BadReference(f"{path}: 'val_class_distribution' must be shares >= 0 summing to 1, got {total}")
    return {k: v / total for k, v in shares.items()}


def parse_metrics(text: str) -> Counts:
    """``predicted_class_total`` samples of a Prometheus text page, by (model, version) and class."""
    counts: Counts = {}
    try:
        samples = prom_text.parse(text, (METRIC,))
    except ValueError as exc:
        raise PrometheusUnavailable(f"the metrics page is not in the Prometheus text format: {exc}") from None
    for (_, label_items), value in samples.items():
        labels = dict(label_items)
        if "class" in labels:
            group = (labels.get("model", ""), labels.get("version", ""))
            counts.setdefault(group, {})[labels["class"]] = value
    return counts


def scrape(url: str, timeout_s: float = 5.0) -> Counts:
    return parse_metrics(fetch(url, timeout_s).decode("utf-8", errors="replace"))


def delta(before: Counts, after: Counts) -> Counts:
    """Per-series increase between two scrapes; a series that went down was reset (server restart)."""
    out: Counts = {}
    for group, by_class in after.items():
        old = before.get(group, {})
        out[group] = {c: v - old.get(c, 0.0) if v >= old.get(c, 0.0) else v for c, v in by_class.items()}
    return out


def query_prometheus(base_url: str, window: str, timeout_s: float = 5.0) -> Counts:
    """``increase(predicted_class_total[window])`` per (model, version, class) from Prometheus."""
    query = f"sum by (model, version, class) (increase({METRIC}[{window}]))"
    try:
        series = Prometheus(base_url, timeout_s).query(query)
    except (KeyError, TypeError, IndexError) as exc:
        raise PrometheusUnavailable(f"unexpected answer from Prometheus at {base_url}: {exc!r}") from None
    counts: Counts = {}
    for labels, value in series:  # NaN (no samples yet) is dropped: the class counted nothing
        group = (labels.get("model", ""), labels.get("version", ""))
        counts.setdefault(group, {})[labels.get("class", "")] = value
    return counts


def psi(observed: Mapping[str, float], reference: Mapping[str, float], epsilon: float = EPSILON) -> float:
    """Population stability index of observed counts against reference shares (same classes)."""
    n = sum(observed.get(c, 0.0) for c in reference)
    if n <= 0:
        raise TooFewPredictions("no predictions counted")
    counts = np.array([[observed.get(c, 0.0) for c in reference]], dtype=float)
    return float(psi_rows(counts, np.array([list(reference.values())], dtype=float), epsilon)[0])


def psi_rows(counts: np.ndarray, shares: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """:func:`psi` of each row of ``counts`` against the same row of ``shares`` (or one row for all).

    One formula for one figure and for the thousands of simulated ones the release judge's chance
    level is read from (:func:`release.figures.psi_chance`).
    """
    p = np.maximum(counts / counts.sum(axis=-1, keepdims=True), epsilon)
    q = np.maximum(shares, epsilon)
    return ((p - q) * np.log(p / q)).sum(axis=-1)


def chi_square_p(observed: Mapping[str, float], reference: Mapping[str, float], epsilon: float = EPSILON):
    """Goodness-of-fit p-value of the counts under the reference shares; ``None`` without SciPy."""
    try:
        from scipy.stats import chisquare
    except ImportError:
        return None
    classes = list(reference)
    f_obs = [observed.get(c, 0.0) for c in classes]
    q = [max(reference[c], epsilon) for c in classes]
    f_exp = [sum(f_obs) * v / sum(q) for v in q]
    return float(chisquare(f_obs, f_exp).pvalue)


@dataclass(frozen=True)
class DriftResult:
    model: str
    version: str
    predictions: float
    psi: float | None  # None: fewer than min_count predictions, not judged
    p_value: float | None
    observed: dict[str, float]

    def drifted(self, threshold: float) -> bool:
        return self.psi is not None and self.psi > threshold


def evaluate(counts: Counts, reference: Mapping[str, float], min_count: float, epsilon: float = EPSILON):
    """One :class:`DriftResult` per (model, version); raises when none has ``min_count`` predictions."""
    results = []
    for (model, version), by_class in sorted(counts.items()):
        unknown = sorted(set(by_class) - set(reference))
        if unknown:
            raise BadReference(f"the server counts classes the reference lacks: {unknown}")
        n = sum(by_class.values())
        judged = n >= max(min_count, 1e-9)
        score = psi(by_class, reference, epsilon) if judged else None
        p_value = chi_square_p(by_class, reference, epsilon) if judged else None
        results.append(DriftResult(model, version, n, score, p_value, dict(by_class)))
    if not any(r.psi is not None for r in results):
        seen = ", ".join(f"{r.model} v{r.version}: {r.predictions:.0f}" for r in results) or "none"
        raise TooFewPredictions(f"too few predictions to judge (need {min_count:g}; counted {seen})")
    return results


def render_table(results: list[DriftResult], reference: Mapping[str, float], threshold: float) -> str:
    lines = []
    for r in results:
        verdict = "not judged" if r.psi is None else ("DRIFT" if r.drifted(threshold) else "ok")
        score = "-" if r.psi is None else f"{r.psi:.4f}"
        p = "" if r.p_value is None else f", chi-square p={r.p_value:.3g}"
        lines.append(
            f"{r.model} v{r.version}: {r.predictions:.0f} predictions, PSI {score} "
            f"(threshold {threshold:g}){p} -> {verdict}"
        )
        lines.append(f"  {'class':<14}{'reference':>10}{'observed':>10}{'count':>10}")
        for c, q in reference.items():
            count = r.observed.get(c, 0.0)
            share = count / r.predictions if r.predictions else 0.0
            lines.append(f"  {c:<14}{q:>10.4f}{share:>10.4f}{count:>10.0f}")
    return "\n".join(lines)
