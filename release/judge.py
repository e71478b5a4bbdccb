"""Judging one release step from Prometheus: the figures, their thresholds, and the verdict.

A step is judged on four figures, each for the candidate against production over the step's window:

* **error ratio** - failed / all requests of the candidate version (Triton's own counters);
* **p99 latency** - Triton's request-latency summary, candidate against production (it may breach
  only after ``latency_min_requests``: the p99 of a few dozen requests is their maximum, and on a
  busy host one slow request says little);
* **shadow agreement** - the share of shadowed images on which the candidate's top-1 equals
  production's (shadow step only);
* **class-mix PSI** - the divergence between the candidate's and production's predicted classes.

Thresholds come from ``params.yaml`` (``release``) and, where a figure is a ratio of counts, from the
number of samples: a ratio *breaches* only when its whole exact (Clopper-Pearson) interval, each tail
the normal's beyond ``confidence_z``, lies beyond the limit, so a handful of unlucky images cannot
roll back a good candidate, and a step *passes* only when every point estimate is within its limit
and the candidate answered at least ``min_images``. Anything in between is inconclusive: the step
keeps collecting.

The agreement limit is derived, not picked: two classifiers with test accuracies ``a`` and ``b`` agree
on at least ``a + b - 1`` of images like the test set (their errors can at most be disjoint), so a
candidate agreeing less than that (minus ``agreement_slack``) behaves unlike its own test accuracy.
The PSI limit is ``max_psi`` plus the PSI two equal distributions show by chance at these sample
sizes: ``(1/n_c + 1/n_p) * (k - 1 + z * sqrt(2 (k - 1)))`` (a scaled chi-square with ``k - 1``
degrees of freedom). That assumes predictions drawn independently; traffic that arrives in runs of
one class (a batch job walking a sorted folder) looks skewed over short windows, which is why the
PSI, like the p99, is judged only once the candidate has answered ``min_images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from common.params import ReleaseConfig
from monitoring.drift import psi
from release.prometheus import Prometheus


@dataclass(frozen=True)
class Figure:
    name: str
    value: float | None  # None: not measurable yet
    limit: float | None
    breached: bool  # beyond the limit with confidence: roll back
    within: bool  # the point estimate is within the limit
    detail: str = ""

    def row(self) -> dict:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        state = "BREACH" if self.breached else ("ok" if self.within else "pending")
        return {"figure": self.name, "value": fmt(self.value), "limit": fmt(self.limit), "state": state} | (
            {"detail": self.detail} if self.detail else {}
        )


@dataclass(frozen=True)
class Verdict:
    images: float  # the candidate's images in the window
    figures: tuple[Figure, ...] = field(default_factory=tuple)

    @property
    def breaches(self) -> list[Figure]:
        return [f for f in self.figures if f.breached]

    def passes(self, min_images: int) -> bool:
        return not self.breaches and self.images >= min_images and all(f.within for f in self.figures)

    def metrics(self) -> dict[str, float]:
        """The figures as MLflow metrics (only those that could be measured)."""
        out = {"candidate_images": float(self.images)}
        for f in self.figures:
            if f.value is not None:
                out[f.name] = float(f.value)
            if f.limit is not None:
                out[f"{f.name}_limit"] = float(f.limit)
        return out


def interval(successes: float, n: float, z: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion, each tail the normal's beyond z.

    Exact rather than approximate because steps are judged early, on a handful of images, where the
    normal approximations promise more confidence than they have.
    """
    from scipy.stats import beta, norm

    if n <= 0:
        return 0.0, 1.0
    k, n = round(min(max(successes, 0.0), n)), round(n)
    alpha = float(norm.sf(z))
    low = 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha, k + 1, n - k))
    return low, high


def psi_noise(n_candidate: float, n_production: float, classes: int, z: float) -> float:
    """The PSI two samples of one distribution reach by chance (mean + z sd of its chi-square)."""
    dof = classes - 1
    return (1 / n_candidate + 1 / n_production) * (dof + z * math.sqrt(2 * dof))


def _sel(model: str, version: int) -> str:
    return f'model="{model}",version="{version}"'


def _by_class(prom: Prometheus, metric: str, model: str, version: int, window: str) -> dict[str, float]:
    query = f"sum by (class) (increase({metric}{{{_sel(model, version)}}}[{window}]))"
    return {labels.get("class", ""): value for labels, value in prom.query(query)}


@dataclass(frozen=True)
class Step:
    """What is being judged: who against whom, in which step, since when."""

    candidate: tuple[str, int]  # Triton model name, version
    production: tuple[str, int]
    shadow: bool
    started_at: float
    release_started_at: float
    min_agreement: float | None  # from the tagged accuracies; None when either is unknown


def judge(prom: Prometheus, step: Step, cfg: ReleaseConfig, now: float, baseline_p99_ms: float | None):
    """The verdict on ``step`` at ``now``; ``baseline_p99_ms`` stands in when production is idle."""
    z = cfg.confidence_z
    window = f"{max(math.ceil(now - step.started_at), 2)}s"
    whole = f"{max(math.ceil(now - step.release_started_at), 2)}s"
    (cm, cv), (pm, pv) = step.candidate, step.production
    figures = []

    ok = prom.scalar(f"sum(increase(nv_inference_request_success{{{_sel(cm, cv)}}}[{window}]))") or 0.0
    bad = prom.scalar(f"sum(increase(nv_inference_request_failure{{{_sel(cm, cv)}}}[{window}]))") or 0.0
    total = ok + bad
    low, _ = interval(bad, total, z)
    ratio = bad / total if total else None
    figures.append(
        Figure(
            "error_ratio",
            ratio,
            cfg.max_error_ratio,
            breached=total > 0 and low > cfg.max_error_ratio,
            within=ratio is not None and ratio <= cfg.max_error_ratio,
            detail=f"{bad:.0f} of {total:.0f} requests failed",
        )
    )

    p99 = '{%s,quantile="0.99"}'
    cand = prom.scalar(f"max(nv_inference_request_summary_us{p99 % _sel(cm, cv)})")
    prod = prom.scalar(f"max(nv_inference_request_summary_us{p99 % _sel(pm, pv)})")
    prod_ms = prod / 1000 if prod is not None else baseline_p99_ms
    limit = prod_ms * cfg.max_p99_ratio + cfg.p99_slack_ms if prod_ms is not None else None
    cand_ms = cand / 1000 if cand is not None else None
    figures.append(
        Figure(
            "p99_ms",
            cand_ms,
            limit,
            breached=cand_ms is not None
            and limit is not None
            and cand_ms > limit
            and total >= cfg.latency_min_requests,
            within=cand_ms is not None and limit is not None and cand_ms <= limit,
            detail=f"production p99 {prod_ms:.2f} ms" if prod_ms is not None else "production p99 unknown",
        )
    )

    candidate_classes = _by_class(
        prom, "shadow_predicted_class_total" if step.shadow else "predicted_class_total", cm, cv, window
    )
    images = sum(candidate_classes.values())
    if step.shadow:
        agree = {
            labels.get("agree"): value
            for labels, value in prom.query(
                f"sum by (agree) (increase(shadow_agreement_total{{{_sel(cm, cv)}}}[{window}]))"
            )
        }
        n = agree.get("true", 0.0) + agree.get("false", 0.0)
        value = agree.get("true", 0.0) / n if n else None
        _, high = interval(agree.get("true", 0.0), n, z)
        need = step.min_agreement
        figures.append(
            Figure(
                "shadow_agreement",
                value,
                need,
                breached=need is not None and n > 0 and high < need,
                within=value is not None and (need is None or value >= need),
                detail=f"{n:.0f} shadowed images"
                + ("" if need is not None else "; no limit: a tagged test accuracy is missing"),
            )
        )

    production_classes = _by_class(prom, "predicted_class_total", pm, pv, whole)
    n_c, n_p = images, sum(production_classes.values())
    if n_c > 0 and n_p > 0:
        classes = sorted(set(candidate_classes) | set(production_classes))
        shares = {c: production_classes.get(c, 0.0) / n_p for c in classes}
        value = psi({c: candidate_classes.get(c, 0.0) for c in classes}, shares)
        noise = psi_noise(n_c, n_p, len(classes), z)
        figures.append(
            Figure(
                "class_psi",
                value,
                cfg.max_psi,
                breached=value > cfg.max_psi + noise and n_c >= cfg.min_images,
                within=value <= cfg.max_psi + psi_noise(n_c, n_p, len(classes), 0.0),
                detail=f"{n_c:.0f} candidate vs {n_p:.0f} production predictions; chance level {noise:.3f}",
            )
        )
    else:
        figures.append(Figure("class_psi", None, cfg.max_psi, False, False, "no predictions yet"))
    return Verdict(images, tuple(figures)), prod_ms
