"""``cifar10 monitor status``: the label-free accuracy estimate and the input drift, per served version.

The numbers are the ones the rules in ``rules/quality.yml`` compute, read either from Triton's
``/metrics`` (cumulative since the server started, or the change over a window) or from Prometheus
(``increase()`` over a range, what the alerts see). Per classifier version:

* the **estimate**: ``min(ATC, class-mix bound)`` (:mod:`monitoring.accuracy_estimate`) with the
  Wilson interval of its sampling at ``monitoring.interval_z`` - the sampling alone; the method's own
  error under shift is measured in ``docs/monitoring.md``;
* the **reference accuracy** of the version on its held-out split, and whether the estimate is more
  than ``monitoring.accuracy_drop`` below it;
* the **input drift**: PSI of each input statistic against the version's reference bins, and whether
  it is above ``monitoring.input_psi``. While an input statistic drifts the estimate is flagged
  *unreliable*: confidence-based estimates overestimate under strong shift.

A version is judged only past ``monitoring.min_predictions`` scored images, as the alerts are.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from common import prom_text
from common.exit_codes import TooLittleData
from common.params import MonitoringConfig
from common.promql import Prometheus, PrometheusUnavailable, fetch
from monitoring.accuracy_estimate import wilson_interval
from monitoring.drift import psi

COUNTERS = (
    "quality_prediction_total",
    "confident_prediction_total",
    "predicted_class_total",
    "input_statistic_total",
)
GAUGES = ("quality_reference_accuracy", "quality_reference_class_ratio", "input_statistic_reference_ratio")
KEYS = {
    "quality_prediction_total": (),
    "confident_prediction_total": (),
    "predicted_class_total": ("class",),
    "input_statistic_total": ("statistic", "bin"),
    "quality_reference_accuracy": (),
    "quality_reference_class_ratio": ("class",),
    "input_statistic_reference_ratio": ("statistic", "bin"),
}
Version = tuple[str, str]
# name -> (model, version) -> key labels -> value
Samples = dict[str, dict[Version, dict[tuple[str, ...], float]]]


class NothingScored(TooLittleData):
    """No served version has a quality reference and enough scored predictions (exit code 7)."""


def _group(series: Iterable[tuple[dict[str, str], float]], name: str, into: Samples) -> None:
    for labels, value in series:
        version = (labels.get("model", ""), labels.get("version", ""))
        key = tuple(labels.get(k, "") for k in KEYS[name])
        slot = into.setdefault(name, {}).setdefault(version, {})
        slot[key] = slot.get(key, 0.0) + value if name in COUNTERS else max(slot.get(key, value), value)


def from_text(text: str) -> Samples:
    """Every series this status needs from one ``/metrics`` page."""
    try:
        parsed = prom_text.parse(text, COUNTERS + GAUGES)
    except ValueError as exc:
        raise PrometheusUnavailable(f"the metrics page is not in the Prometheus text format: {exc}") from None
    out: Samples = {}
    for (name, items), value in parsed.items():
        _group([(dict(items), value)], name, out)
    return out


def scrape(url: str, window_s: float = 0.0, timeout_s: float = 5.0) -> Samples:
    """``/metrics`` now, or the counters' change over ``window_s`` (gauges as at the end)."""
    first = from_text(fetch(url, timeout_s).decode("utf-8", errors="replace"))
    if window_s <= 0:
        return first
    time.sleep(window_s)
    return delta(first, from_text(fetch(url, timeout_s).decode("utf-8", errors="replace")))


def delta(before: Samples, after: Samples) -> Samples:
    """The counters' change from ``before`` to ``after`` (gauges as in ``after``); a counter that went
    down was reset (a restart) and counts from zero."""
    out: Samples = {}
    for name, versions in after.items():
        for version, values in versions.items():
            old = before.get(name, {}).get(version, {}) if name in COUNTERS else {}
            out.setdefault(name, {})[version] = {
                k: v - old.get(k, 0.0) if v >= old.get(k, 0.0) else v for k, v in values.items()
            }
    return out


def query(prometheus: Prometheus, window: str) -> Samples:
    """``increase()`` of the counters over ``window`` and the gauges now, from Prometheus."""
    out: Samples = {}
    for name in COUNTERS + GAUGES:
        by = ", ".join(("model", "version", *KEYS[name]))
        counter = name in COUNTERS
        expr = f"sum by ({by}) (increase({name}[{window}]))" if counter else f"max by ({by}) ({name})"
        _group(prometheus.query(expr), name, out)
    return out


@dataclass(frozen=True)
class StatisticDrift:
    statistic: str
    images: float
    psi: float | None  # None: fewer than min_predictions images

    def drifted(self, cfg: MonitoringConfig) -> bool:
        return self.psi is not None and self.psi > cfg.input_psi


@dataclass(frozen=True)
class VersionQuality:
    model: str
    version: str
    scored: float
    atc: float | None
    class_mix_bound: float | None
    reference_accuracy: float | None
    interval: tuple[float, float] | None
    drift: tuple[StatisticDrift, ...]

    @property
    def estimate(self) -> float | None:
        values = [v for v in (self.atc, self.class_mix_bound) if v is not None]
        return min(values) if values else None

    def judged(self, cfg: MonitoringConfig) -> bool:
        return self.estimate is not None and self.scored >= cfg.min_predictions

    def accuracy_low(self, cfg: MonitoringConfig) -> bool:
        return (
            self.judged(cfg)
            and self.reference_accuracy is not None
            and self.estimate < self.reference_accuracy - cfg.accuracy_drop
        )

    def reliable(self, cfg: MonitoringConfig) -> bool:
        return not any(d.drifted(cfg) for d in self.drift)

    def alerting(self, cfg: MonitoringConfig) -> bool:
        return self.accuracy_low(cfg) or not self.reliable(cfg)


def _bound(predicted: dict[tuple[str, ...], float], reference: dict[tuple[str, ...], float]) -> float | None:
    n = sum(predicted.values())
    if n <= 0 or not reference:
        return None
    total = sum(reference.values())
    return sum(min(predicted.get(c, 0.0) / n, q / total) for c, q in reference.items())


def _drift(samples: Samples, version: Version, cfg: MonitoringConfig) -> tuple[StatisticDrift, ...]:
    live = samples.get("input_statistic_total", {}).get(version, {})
    reference = samples.get("input_statistic_reference_ratio", {}).get(version, {})
    out = []
    for statistic in sorted({s for s, _ in reference}):
        shares = {b: q for (s, b), q in reference.items() if s == statistic}
        counts = {b: live.get((statistic, b), 0.0) for b in shares}
        n = sum(counts.values())
        judged = n >= cfg.min_predictions and n > 0
        out.append(StatisticDrift(statistic, n, psi(counts, shares) if judged else None))
    return tuple(out)


def status(samples: Samples, cfg: MonitoringConfig) -> list[VersionQuality]:
    """One :class:`VersionQuality` per version with a reference; raises when none could be judged."""
    versions = sorted(
        set(samples.get("quality_reference_accuracy", {})) | set(samples.get("quality_prediction_total", {}))
    )
    out = []
    for version in versions:
        n = sum(samples.get("quality_prediction_total", {}).get(version, {}).values())
        k = sum(samples.get("confident_prediction_total", {}).get(version, {}).values())
        reference = samples.get("quality_reference_accuracy", {}).get(version, {}).get(())
        bound = _bound(
            samples.get("predicted_class_total", {}).get(version, {}),
            samples.get("quality_reference_class_ratio", {}).get(version, {}),
        )
        atc = k / n if n > 0 else None
        drift = _drift(samples, version, cfg)
        row = VersionQuality(version[0], version[1], n, atc, bound, reference, None, drift)
        if row.estimate is not None and n > 0:
            low, high = wilson_interval(row.estimate * n, n, cfg.interval_z)
            row = dataclasses.replace(row, interval=(low, high))
        out.append(row)
    if not any(r.judged(cfg) for r in out):
        seen = ", ".join(f"{r.model} v{r.version}: {r.scored:.0f}" for r in out) or "none has a reference"
        raise NothingScored(
            f"too few scored predictions to judge (need {cfg.min_predictions}; counted {seen})"
        )
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def render(rows: list[VersionQuality], cfg: MonitoringConfig) -> str:
    lines = []
    for r in rows:
        if not r.judged(cfg):
            verdict = "not judged"
        else:
            verdict = "ALERT: accuracy" if r.accuracy_low(cfg) else "ok"
            verdict += "" if r.reliable(cfg) else " (unreliable: inputs drift)"
        interval = "" if r.interval is None else f" [{_pct(r.interval[0])}, {_pct(r.interval[1])}]"
        lines.append(
            f"{r.model} v{r.version}: {r.scored:.0f} scored, estimated accuracy {_pct(r.estimate)}{interval} "
            f"(ATC {_pct(r.atc)}, class-mix bound {_pct(r.class_mix_bound)}), "
            f"reference {_pct(r.reference_accuracy)} -> {verdict}"
        )
        lines.append(f"  {'input statistic':<26}{'images':>8}{'PSI':>8}  (alert above {cfg.input_psi:g})")
        for d in r.drift:
            score = "-" if d.psi is None else f"{d.psi:.3f}"
            flag = "  DRIFT" if d.drifted(cfg) else ""
            lines.append(f"  {d.statistic:<26}{d.images:>8.0f}{score:>8}{flag}")
    return "\n".join(lines)
