"""The optimizer's run, step by step: measure and judge, log, record the choice (or clear it).

A command calls these in order and prints between them (:func:`optimize.evidence.table_text`, the
choice); bringing the repository and the live server along is :func:`registry.sync.sync_for`.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common.exit_codes import Failed
from common.params import Params
from optimize.objective import Row
from optimize.search import Form


class NoCandidate(Failed):
    """No candidate met the objective; nothing was recorded (exit code 1)."""


@dataclass(frozen=True)
class Measured:
    """Every measured row, the one the objective chose (or ``None``), and the evidence written."""

    rows: list[Row]
    best: Row | None
    baseline: Form | None  # fp32's production form, the accuracy reference
    files: dict[str, Path]
    settings: dict = field(default_factory=dict)


def payloads(images: Path | None, n: int = 64) -> list[bytes]:
    """Encoded test images (or seeded synthetic PNGs when no folder is given)."""
    from client.core import images as img

    items = img.discover(images, limit=n, seed=0) if images else img.synthetic(n, seed=0)
    return [item.read() for item in items]


def measure_forms(
    params: Params, cache: Path, images: Path | None, out: Path, backend_dir: Path | None = None
) -> Measured:
    """Measure the grid of every form on a private server, judge it, write the table and PNG to ``out``."""
    from optimize import evidence
    from optimize.objective import judge
    from optimize.search import run_search

    cfg = params.optimize
    with tempfile.TemporaryDirectory(prefix="cifar10-optimize-") as tmp:
        rows, baseline = run_search(params, cache, Path(tmp), payloads(images), backend_dir)
    best = judge(rows, cfg, baseline.accuracy if baseline else None)
    settings = {
        "images_per_request": cfg.images_per_request,
        "concurrency": cfg.concurrency,
        "seconds": cfg.seconds,
        "p99_budget_ms": cfg.p99_budget_ms,
        "accuracy_margin": cfg.accuracy_margin,
    }
    files = evidence.write(rows, best, cfg.p99_budget_ms, out, {"settings": settings})
    return Measured(rows, best, baseline, files, settings)


def log_measured(experiment: str, measured: Measured) -> str:
    """The evidence as an MLflow run of ``experiment``; returns its id."""
    from optimize import evidence

    return evidence.log_to_mlflow(experiment, measured.files, measured.best, measured.settings)


def chosen(measured: Measured) -> Row:
    """The row the objective chose; :class:`NoCandidate` if none met it."""
    if measured.best is None:
        raise NoCandidate(f"no candidate met the objective (see {measured.files['json']}); nothing recorded")
    return measured.best


def record_best(params: Params, measured: Measured, run_id: str = "") -> str:
    """Record the chosen row as the registry's serving choice; returns where (``name vN``)."""
    from common.params import ALL_PRECISIONS
    from registry import serving_choice

    best, baseline = chosen(measured), measured.baseline
    choice = serving_choice.ServingChoice(
        precision=best.candidate.precision,
        version=best.version,
        preferred_batch_sizes=best.candidate.preferred_batch_sizes,
        max_queue_delay_us=best.candidate.max_queue_delay_us,
        instance_count=best.candidate.instance_count,
        baseline_version=baseline.version if baseline else 0,
        throughput_img_s=best.throughput_img_s,
        p99_ms=best.p99_ms or 0.0,
        chosen_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        run_id=run_id,
    )
    return serving_choice.record(params.registry, ALL_PRECISIONS, choice)


def clear_served_choice(params: Params) -> list[str]:
    """Remove the recorded serving choice from every form; returns the versions it was removed from."""
    from common.params import ALL_PRECISIONS
    from registry import serving_choice

    return serving_choice.clear(params.registry, ALL_PRECISIONS)
