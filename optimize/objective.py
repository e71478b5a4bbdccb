"""The search space and the objective of ``cifar10 optimize``, as pure functions of measured rows.

A row is one candidate (form x preferred batch sizes x queue delay x instance count) measured through
the live ensemble. The objective is Model Analyzer's usual one, with the accuracy guard Model
Navigator adds: the highest throughput among the rows whose p99 is within the budget and whose form's
test accuracy is within ``accuracy_margin`` of fp32's. Accuracy is each version's own, measured at
export on the test split through its own runtime (the registry's ``test_accuracy`` tag), so a form
whose accuracy is unknown is never chosen.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

from common.params import OptimizeConfig


@dataclass(frozen=True)
class Candidate:
    precision: str
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    instance_count: int

    @property
    def label(self) -> str:
        sizes = ",".join(map(str, self.preferred_batch_sizes)) or "-"
        return f"{self.precision} pref[{sizes}] delay{self.max_queue_delay_us} x{self.instance_count}"


@dataclass
class Row:
    """One measured candidate and the verdict on it."""

    candidate: Candidate
    version: int
    accuracy: float | None  # the version's test accuracy (registry tag); None when unknown
    throughput_img_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    feasible: bool = False
    reason: str = ""

    def as_dict(self) -> dict:
        out = {**asdict(self.candidate), "version": self.version, "label": self.candidate.label}
        return out | {k: v for k, v in asdict(self).items() if k != "candidate"}


def grid(cfg: OptimizeConfig, precisions: list[str], max_batch: dict[str, int]) -> list[Candidate]:
    """Every setting for every form, skipping preferred sizes above what that form's artifact takes."""
    out = []
    for precision in precisions:
        for sizes, delay, count in itertools.product(
            cfg.preferred_batch_sizes, cfg.max_queue_delay_us, cfg.instance_counts
        ):
            if all(b <= max_batch[precision] for b in sizes):
                out.append(Candidate(precision, tuple(sizes), delay, count))
    return out


def judge(rows: list[Row], cfg: OptimizeConfig, baseline_accuracy: float | None) -> Row | None:
    """Mark each row feasible or not (with the reason) and return the best feasible one, if any."""
    for row in rows:
        reasons = []
        if row.errors:
            reasons.append(f"{row.errors} failed requests")
        if row.p99_ms is None or row.p99_ms > cfg.p99_budget_ms:
            reasons.append(f"p99 {row.p99_ms} ms > budget {cfg.p99_budget_ms} ms")
        if row.accuracy is None or baseline_accuracy is None:
            reasons.append("test accuracy unknown (no test_accuracy tag)")
        elif row.accuracy < baseline_accuracy - cfg.accuracy_margin:
            reasons.append(
                f"accuracy {row.accuracy:.4f} < fp32 {baseline_accuracy:.4f} - {cfg.accuracy_margin}"
            )
        row.feasible, row.reason = not reasons, "; ".join(reasons)
    feasible = [r for r in rows if r.feasible]
    # Ties (rare with real timings) go to the more accurate form, then the simpler setting.
    return max(
        feasible,
        key=lambda r: (r.throughput_img_s, r.accuracy or 0.0, -r.candidate.instance_count),
        default=None,
    )
