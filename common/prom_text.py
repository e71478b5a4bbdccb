"""Snapshots of the server's Prometheus ``/metrics`` and the change of its counters over a run.

Comparing the client's own counts with the server's counters catches what neither sees alone:
requests the server executed twice (a retry after a dropped response), predictions that never
reached the client, or traffic from someone else hitting the same server during the run.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TypedDict

log = logging.getLogger(__name__)

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "predicted_class_total",
)
Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Snapshot:
    """Counter samples by ``(sample name, sorted labels)``; ``error`` says why a scrape failed."""

    samples: dict[Key, float] = field(default_factory=dict)
    error: str | None = None


def parse(text: str, names: tuple[str, ...] = COUNTERS) -> dict[Key, float]:
    """Counter samples of the wanted families from the Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # The parser reports counters as ``<name>_total`` even where Triton omits the suffix.
            name = sample.name
            if name not in names and name.endswith("_total") and name[: -len("_total")] in names:
                name = name[: -len("_total")]
            if name in names:
                out[(name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def scrape(url: str | None, timeout_s: float = 5.0) -> Snapshot:
    """One snapshot; never raises, because metrics are a report, not a precondition of the run."""
    if not url:
        return Snapshot(error="no metrics URL given")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return Snapshot(parse(resp.read().decode("utf-8", errors="replace")))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("could not scrape %s: %s", url, exc)
        return Snapshot(error=f"{url}: {exc}")


def scrape_settled(url: str | None, interval_s: float = 0.2, max_wait_s: float = 2.0) -> Snapshot:
    """Scrape until two snapshots ``interval_s`` apart agree (or ``max_wait_s`` passes).

    Triton counts a request when its backend reports statistics, which can be a moment after the
    client already has the response; a snapshot taken right after the last answer misses those.
    On a server with other traffic the counters never settle, hence the bound.
    """
    snap = scrape(url)
    deadline = time.monotonic() + max_wait_s
    while snap.error is None and time.monotonic() < deadline:
        time.sleep(interval_s)
        again = scrape(url)
        if again.error is not None or again.samples == snap.samples:
            return snap if again.error is None else again
        snap = again
    return snap


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels)


class CounterDelta(TypedDict, total=False):
    """What :func:`delta` reports: ``available`` always; the rest when both scrapes worked."""

    available: bool
    error: str
    counter_reset: bool
    counters: dict[str, dict[str, float]]
    predicted_class_total_by_class: dict[str, float]


def delta(before: Snapshot, after: Snapshot) -> CounterDelta:
    """Non-zero counter changes, grouped by metric, plus the prediction mix by class.

    A counter that went down means the server restarted in between (Prometheus counters reset to
    zero); its delta is then the value after the restart, a lower bound, and ``counter_reset`` is set.
    """
    if before.error or after.error:
        return {"available": False, "error": before.error or after.error}
    changes: dict[str, dict[str, float]] = {}
    by_class: dict[str, float] = {}
    reset = False
    for key, value in after.samples.items():
        old = before.samples.get(key, 0.0)
        if value < old:
            reset, change = True, value
        else:
            change = value - old
        if change:
            name, labels = key
            changes.setdefault(name, {})[_label_text(labels)] = change
            if name == "predicted_class_total":
                cls = dict(labels).get("class", "?")
                by_class[cls] = by_class.get(cls, 0.0) + change
    return {
        "available": True,
        "counter_reset": reset,
        "counters": {k: dict(sorted(v.items())) for k, v in sorted(changes.items())},
        "predicted_class_total_by_class": dict(sorted(by_class.items())),
    }
