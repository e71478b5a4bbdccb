"""``cifar10 release report``: per-version table and a PNG over a release, from Prometheus.

The time span and the two versions come from the release record; every figure is a PromQL query
over that span: traffic (images answered), failed calls and p50/p99 (the router's own counter and
histogram, as the judge reads them: Triton's summaries include warm-ups), shadow agreement (overall
and per class production answered) and the class mix each version predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.fsutil import write_json
from common.promql import Prometheus
from monitoring.drift import psi
from registry.release_record import ReleaseRecord
from release.figures import selector as _sel


def _roles(record: ReleaseRecord, models: tuple[str, str]) -> tuple[tuple[str, str, int], ...]:
    return (
        ("production", models[0], record.production_version),
        ("candidate", models[1], record.candidate_version),
    )


def table(prom: Prometheus, record: ReleaseRecord, models: tuple[str, str], end: float) -> list[dict]:
    span = f"{max(int(end - record.started_at) + 1, 2)}s"
    rows = []
    production_mix: dict[str, float] = {}
    for role, model, version in _roles(record, models):
        sel = _sel(model, version)
        mix = {
            labels.get("class", ""): v
            for labels, v in prom.query(
                f"sum by (class) (increase(predicted_class_total{{{sel}}}[{span}]))", end
            )
        }
        by_class: dict[str, dict[str, float]] = {}
        for labels, v in prom.query(
            f"sum by (agree, class) (increase(shadow_agreement_total{{{sel}}}[{span}]))", end
        ):
            by_class.setdefault(labels.get("class", ""), {})[labels.get("agree", "")] = v
        shadow = {agree: sum(c.get(agree, 0.0) for c in by_class.values()) for agree in ("true", "false")}
        class_agreement = {
            name: round(c.get("true", 0.0) / n, 4)
            for name, c in sorted(by_class.items())
            if (n := c.get("true", 0.0) + c.get("false", 0.0)) > 0
        }
        failed = prom.scalar(f"sum(increase(release_route_failure_total{{{sel}}}[{span}]))", end) or 0.0
        buckets = f"sum by (le) (increase(release_route_latency_ms_bucket{{{sel}}}[{span}]))"
        quantiles = {q: prom.scalar(f"histogram_quantile({q}, {buckets})", end) for q in ("0.5", "0.99")}
        shadowed = sum(shadow.values())
        served = sum(mix.values())
        if role == "production":
            production_mix = mix
        divergence = None
        if role == "candidate" and served > 0 and sum(production_mix.values()) > 0:
            n = sum(production_mix.values())
            divergence = psi(mix, {c: v / n for c, v in production_mix.items()})
        rows.append(
            {
                "role": role,
                "model": model,
                "version": version,
                "served_images": round(served),
                "shadowed_images": round(shadowed),
                "failed_calls": round(failed),
                "p50_ms": None if quantiles["0.5"] is None else round(quantiles["0.5"], 2),
                "p99_ms": None if quantiles["0.99"] is None else round(quantiles["0.99"], 2),
                "shadow_agreement": round(shadow.get("true", 0.0) / shadowed, 4) if shadowed else None,
                "class_psi_vs_production": None if divergence is None else round(divergence, 4),
                "class_mix": {c: round(v) for c, v in sorted(mix.items())},
                # per class production answered: the share the candidate agreed on (shadow step)
                "class_agreement": class_agreement,
            }
        )
    return rows


def plot(
    prom: Prometheus, record: ReleaseRecord, models: tuple[str, str], end: float, rows: list[dict], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = record.started_at
    step = max(1.0, (end - start) / 200)
    fig, axes = plt.subplots(4, 1, figsize=(9, 12))
    panels = (
        ("images answered /s", "sum(rate(predicted_class_total{{{sel}}}[10s]))"),
        ("failed calls /s (router)", "sum(rate(release_route_failure_total{{{sel}}}[10s]))"),
        (
            "p99 latency of the router's calls (ms)",
            "histogram_quantile(0.99, sum by (le) (rate(release_route_latency_ms_bucket{{{sel}}}[10s])))",
        ),
    )
    for ax, (title, query) in zip(axes, panels, strict=False):
        for role, model, version in _roles(record, models):
            for _, points in prom.range(query.format(sel=_sel(model, version)), start, end, step):
                ax.plot([t - start for t, _ in points], [v for _, v in points], label=f"{role} v{version}")
        for entry in record.log:
            ax.axvline(entry["at"] - start, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    axes[2].set_xlabel("seconds since start (dotted: step transitions)")
    classes = sorted({c for row in rows for c in row["class_mix"]})
    width = 0.4
    for i, row in enumerate(rows):
        total = sum(row["class_mix"].values()) or 1
        xs = [k + (i - 0.5) * width for k in range(len(classes))]
        axes[3].bar(
            xs,
            [row["class_mix"].get(c, 0) / total for c in classes],
            width,
            label=f"{row['role']} v{row['version']}",
        )
    axes[3].set_xticks(range(len(classes)), classes, rotation=30, fontsize=8)
    axes[3].set_title("class mix of served predictions")
    axes[3].legend(fontsize=8)
    fig.suptitle(f"release of {record.candidate_name} v{record.candidate_version}: {record.step}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(
    prom: Prometheus, record: ReleaseRecord, models: tuple[str, str], out: Path, end: float
) -> dict[str, Path]:
    """``models``: the Triton models of production and of the candidate (they differ across forms)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = table(prom, record, models, end)
    files = {"json": out / "release_report.json", "png": out / "release_report.png"}
    write_json(files["json"], {"record": json.loads(record.to_tag()), "versions": rows})
    plot(prom, record, models, end, rows, files["png"])
    return files
