"""The evidence behind a choice: the table (JSON and CSV), a PNG, and the MLflow run that keeps them."""

from __future__ import annotations

import csv
from pathlib import Path

from common.fsutil import atomic_path, write_json
from optimize.objective import Row

COLUMNS = (
    "label",
    "precision",
    "version",
    "preferred_batch_sizes",
    "max_queue_delay_us",
    "instance_count",
    "throughput_img_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "accuracy",
    "feasible",
    "reason",
)


def table_text(rows: list[Row], best: Row | None) -> str:
    """The table as fixed-width text, the chosen row marked ``*``, fastest first."""
    head = f"  {'candidate':42s} {'img/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'acc':>7s}  verdict"
    lines = [head]
    for r in sorted(rows, key=lambda r: -r.throughput_img_s):
        acc = f"{r.accuracy:.4f}" if r.accuracy is not None else "?"
        mark = "*" if r is best else " "
        verdict = "ok" if r.feasible else r.reason
        lines.append(
            f"{mark} {r.candidate.label:42s} {r.throughput_img_s:8.1f} {r.p50_ms or 0:8.2f} "
            f"{r.p99_ms or 0:8.2f} {acc:>7s}  {verdict}"
        )
    return "\n".join(lines)


def plot(rows: list[Row], best: Row | None, budget_ms: float, path: Path) -> Path:
    """Throughput against p99 per candidate, one colour per form, infeasible ones hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for precision in sorted({r.candidate.precision for r in rows}):
        mine = [r for r in rows if r.candidate.precision == precision]
        points = ax.scatter(
            [r.p99_ms or 0 for r in mine if r.feasible],
            [r.throughput_img_s for r in mine if r.feasible],
            label=precision,
        )
        ax.scatter(
            [r.p99_ms or 0 for r in mine if not r.feasible],
            [r.throughput_img_s for r in mine if not r.feasible],
            facecolors="none",
            edgecolors=points.get_facecolor() if len(points.get_offsets()) else "grey",
        )
    if best is not None:
        ax.annotate(
            best.candidate.label,
            (best.p99_ms or 0, best.throughput_img_s),
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8,
        )
    ax.axvline(budget_ms, color="red", linestyle="--", linewidth=1, label=f"p99 budget {budget_ms:g} ms")
    ax.set_xlabel("p99 latency per request (ms)")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title("cifar10 optimize: each candidate through the live ensemble (hollow: not eligible)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write(rows: list[Row], best: Row | None, budget_ms: float, out: Path, extra: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    records = [r.as_dict() for r in rows]
    write_json(out / "optimize.json", {**extra, "rows": records, "choice": best.as_dict() if best else None})
    with atomic_path(out / "optimize.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    plot(rows, best, budget_ms, out / "optimize.png")
    return {name: out / f"optimize.{name}" for name in ("json", "csv", "png")}


def log_to_mlflow(experiment: str, files: dict[str, Path], best: Row | None, settings: dict) -> str:
    """One MLflow run holding the table, the PNG and the choice's figures; returns its id."""
    import mlflow

    from common import tracking

    tracking.configure()
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="optimize") as run:
        mlflow.log_params(settings)
        if best is not None:
            mlflow.log_params({"chosen": best.candidate.label})
            mlflow.log_metrics(
                {
                    "throughput_img_s": best.throughput_img_s,
                    "p99_ms": best.p99_ms or 0.0,
                    "p50_ms": best.p50_ms or 0.0,
                }
            )
        for path in files.values():
            mlflow.log_artifact(str(path))
        return run.info.run_id
