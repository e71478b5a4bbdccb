"""Judging one release step from Prometheus: the figures, their thresholds, and the verdict.

A step is judged on these figures, each for the candidate against production over the step's window:

* **error ratio** - failed / all calls the router made to the candidate version in the step (its
  shadow copies in shadow, the requests it answered in canary): the router's own counters
  (``release_route_failure_total`` and the latency histogram's count), because a python-backend
  classifier's error responses never reach Triton's ``nv_inference_request_failure``;
* **p99 latency** - from the router's own histogram of its calls to each version
  (``release_route_latency_ms``), both versions over the same interval: the step's window from
  ``latency_settle_s`` after the step's rollout. Triton's latency *summaries* are not used: they are
  sliding over the last minutes, include the ``model_warmup`` executions of every load (a batch-64
  warm-up of WRN-28-10 takes seconds on a CPU) and age out at different moments for the two
  versions, so a reload decided verdicts. The router never sees a warm-up, and the window starts
  after the load (and after the labelled probe). One sample per call, not per request: a batch is
  one wait. The candidate *breaches* when more than 1 % of its calls in the window were
  slower than ``max_p99_ratio`` x production's p99 + ``p99_slack_ms`` - with confidence (the exact
  interval of that share lies above 1 %), and only past ``latency_min_requests`` - so one slow call
  on a busy host says nothing. Histogram buckets only coarsen this in the candidate's favour:
  production's p99 is read as the upper edge of its bucket, the candidate's slow requests as those
  above the first edge past the limit;
* **shadow agreement** - the share of shadowed images on which the candidate's top-1 equals
  production's (shadow step only), against the limit :mod:`release.limits` derives from the gate's
  requirement;
* **per-class agreement** - the same share among the images production called ``c``, for each class
  with at least ``min_class_images`` of them (shadow step only), each against its own derived limit,
  each interval at ``confidence_z`` split over the classes judged (Bonferroni), so ten classes do not
  make ten chances of a false alarm;
* **class-mix PSI** - the divergence between the candidate's and production's predicted classes;
* **labelled probe** (shadow step, measured once at its start, :mod:`release.probe`) - both
  versions' accuracy on the same labelled test images through the live server, the candidate's
  against production's minus ``accuracy_margin``: what no label-free figure can see;
* **estimated accuracy** (:mod:`release.estimate_figures`) - the candidate's label-free ATC estimate
  on live traffic against production's (same images in shadow) and against its own held-out
  accuracy minus ``monitoring.accuracy_drop``.

The verdict is looked at every ``check_interval_s``: repeated looks at a fixed ``confidence_z`` make
the real chance of a false alarm over a step larger than one look's; ``z = 3`` (0.13 % a look, one
tail) keeps it small over the tens of looks a step takes, and the limits themselves are worst cases.

Thresholds come from ``params.yaml`` (``release``) and, where a figure is a ratio of counts, from the
number of samples: a ratio *breaches* only when its whole exact (Clopper-Pearson) interval, each tail
the normal's beyond ``confidence_z``, lies beyond the limit, so a handful of unlucky images cannot
roll back a good candidate, and a step *passes* only when every point estimate is within its limit
and the candidate answered at least ``min_images``. Anything in between is inconclusive: the step
keeps collecting.

The PSI limit is ``max_psi`` plus the PSI two samples of one class mix reach by chance at these
sample sizes, read off a simulation of that null (:func:`release.figures.psi_chance`): the
chi-square formula it replaced held only where every class expects several predictions, and rolled
good candidates back on their first few dozen. Both assume predictions drawn independently; traffic
that arrives in runs of one class (a batch job walking a sorted folder) looks skewed over short
windows, which is why the PSI, like the p99, is judged only once the candidate has answered
``min_images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.params import ReleaseConfig
from common.promql import Prometheus
from monitoring.drift import psi
from release import latency
from release.estimate_figures import estimate_figures
from release.figures import Figure, Verdict, by_class, interval, psi_chance
from release.figures import selector as _sel
from release.limits import Limits

__all__ = ["Figure", "Step", "Verdict", "interval", "judge", "psi_chance"]


@dataclass(frozen=True)
class Step:
    """What is being judged: who against whom, in which step, since when, held to which limits."""

    candidate: tuple[str, int]  # Triton model name, version
    production: tuple[str, int]
    shadow: bool
    started_at: float
    release_started_at: float
    limits: Limits | None  # the agreement limits fixed at the gate; None: none could be derived
    latency_since: float = 0.0  # latency counts from here: the step's rollout done, plus the settle
    measured: tuple[Figure, ...] = ()  # figures measured once for the step (the labelled probe)
    accuracy_drop: float | None = None  # monitoring.accuracy_drop: the estimate vs the candidate's reference


def judge(prom: Prometheus, step: Step, cfg: ReleaseConfig, now: float, baseline_p99_ms: float | None):
    """The verdict on ``step`` at ``now``; ``baseline_p99_ms`` stands in when production is idle."""
    z = cfg.confidence_z
    window = f"{max(math.ceil(now - step.started_at), 2)}s"
    whole = f"{max(math.ceil(now - step.release_started_at), 2)}s"
    (cm, cv), (pm, pv) = step.candidate, step.production
    figures = []

    path = '"shadow"' if step.shadow else '"served"'
    where = f"{_sel(cm, cv)},path={path}"
    ok = prom.scalar(f"sum(increase({latency.METRIC}_count{{{where}}}[{window}]))") or 0.0
    bad = prom.scalar(f"sum(increase(release_route_failure_total{{{where}}}[{window}]))") or 0.0
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
            detail=f"{bad:.0f} of {total:.0f} calls failed",
        )
    )
    latency_figure, production_p99 = latency.figure(prom, step, cfg, now, baseline_p99_ms)
    figures.append(latency_figure)

    candidate_classes = by_class(
        prom, "shadow_predicted_class_total" if step.shadow else "predicted_class_total", cm, cv, window
    )
    images = sum(candidate_classes.values())
    if step.shadow:
        figures += agreement_figures(prom, step, cfg, window)
    figures += step.measured
    figures += estimate_figures(
        prom, step.candidate, step.production, step.shadow, window, z,
        cfg.accuracy_margin, step.accuracy_drop, cfg.min_images,
    )  # fmt: skip

    production_classes = by_class(prom, "predicted_class_total", pm, pv, whole)
    n_c, n_p = images, sum(production_classes.values())
    if n_c > 0 and n_p > 0:
        classes = sorted(set(candidate_classes) | set(production_classes))
        shares = {c: production_classes.get(c, 0.0) / n_p for c in classes}
        value = psi({c: candidate_classes.get(c, 0.0) for c in classes}, shares)
        noise, typical = psi_chance(candidate_classes, production_classes, (z, 0.0))
        figures.append(
            Figure(
                "class_psi",
                value,
                cfg.max_psi,
                breached=value > cfg.max_psi + noise and n_c >= cfg.min_images,
                within=value <= cfg.max_psi + typical,
                detail=f"{n_c:.0f} candidate vs {n_p:.0f} production predictions; chance level {noise:.3f}",
            )
        )
    else:
        figures.append(Figure("class_psi", None, cfg.max_psi, False, False, "no predictions yet"))
    return Verdict(images, tuple(figures)), production_p99


def agreement_figures(prom: Prometheus, step: Step, cfg: ReleaseConfig, window: str) -> list[Figure]:
    """Overall shadow agreement, then one figure per class production called often enough."""
    cm, cv = step.candidate
    counts: dict[str, dict[str, float]] = {}
    for labels, value in prom.query(
        f"sum by (class, agree) (increase(shadow_agreement_total{{{_sel(cm, cv)}}}[{window}]))"
    ):
        counts.setdefault(labels.get("class", ""), {})[labels.get("agree", "")] = value
    agreed = sum(c.get("true", 0.0) for c in counts.values())
    n = agreed + sum(c.get("false", 0.0) for c in counts.values())
    limits = step.limits or Limits(None)
    need = limits.agreement
    _, high = interval(agreed, n, cfg.confidence_z)
    value = agreed / n if n else None
    out = [
        Figure(
            "shadow_agreement",
            value,
            need,
            breached=need is not None and n > 0 and high < need,
            within=value is not None and (need is None or value >= need),
            detail=f"{n:.0f} shadowed images" + ("" if need is not None else "; no limit could be derived"),
        )
    ]
    judged = {
        name: c
        for name, c in sorted(counts.items())
        if c.get("true", 0.0) + c.get("false", 0.0) >= cfg.min_class_images and name in limits.class_agreement
    }
    z = class_z(cfg.confidence_z, len(judged))
    for name, c in judged.items():
        yes, size = c.get("true", 0.0), c.get("true", 0.0) + c.get("false", 0.0)
        limit = limits.class_agreement[name]
        _, top = interval(yes, size, z)
        out.append(
            Figure(
                f"class_agreement.{name}",
                yes / size,
                limit,
                breached=top < limit,
                within=yes / size >= limit,
                detail=f"{size:.0f} shadowed images production called {name}",
            )
        )
    return out


def class_z(z: float, classes: int) -> float:
    """The z whose one-sided tail is ``tail(z) / classes``: ``classes`` tests, one family-wise error."""
    from scipy.stats import norm

    return float(norm.isf(norm.sf(z) / max(classes, 1)))
