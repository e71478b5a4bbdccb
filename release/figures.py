"""The figures a release step is judged on, and the arithmetic every ratio shares.

A ratio of counts *breaches* only when its whole exact (Clopper-Pearson) interval lies beyond its
limit, and is *within* when its point estimate is; anything between keeps the step collecting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from common.promql import Prometheus
from monitoring.drift import psi_rows

DRAWS = 20_000  # simulated pairs per chance level: about 27 beyond the 3-sigma tail


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


def psi_chance(
    candidate: Mapping[str, float], production: Mapping[str, float], zs: tuple[float, ...], draws: int = DRAWS
) -> tuple[float, ...]:
    """The PSI a candidate whose class mix is production's reaches by chance, at each z's one-sided tail.

    Read off the null distribution itself rather than a formula: ``draws`` times, a class mix is
    drawn from what the two samples together say of it (its posterior, a Dirichlet with Jeffreys'
    prior), then both samples again at their own sizes from that mix, scored as the judge scores
    them. Drawing the mix too, not only plugging the pooled shares in, matters where a class is
    rare: its share is then known only roughly, and with the plug-in a candidate of 30 predictions
    over a 90/5/5 mix exceeded the 3-sigma level 0.37 % of the time instead of 0.13 %.

    The chi-square approximation this replaced (``n * PSI`` with ``k - 1`` degrees of freedom) holds
    only where every class expects several predictions; with PSI's ``epsilon`` floor a class that a
    sample of 40 misses by chance adds ``q * ln(q / epsilon)``, and that formula put the 3-sigma
    chance level of 42 predictions at 0.52 where the null's reaches 1.5, so a good candidate was
    rolled back at its first look about one time in eight. The seed is fixed, so the same counts
    always get the same verdict.
    """
    from scipy.stats import norm

    classes = sorted(set(candidate) | set(production))
    c = np.array([max(candidate.get(k, 0.0), 0.0) for k in classes])
    p = np.array([max(production.get(k, 0.0), 0.0) for k in classes])
    n_c, n_p = max(round(c.sum()), 1), max(round(p.sum()), 1)
    rng = np.random.default_rng(0)
    mixes = rng.dirichlet(c + p + 0.5, size=draws)
    cand, prod = rng.multinomial(n_c, mixes), rng.multinomial(n_p, mixes)
    null = psi_rows(cand.astype(float), prod / n_p)
    return tuple(float(np.quantile(null, 1.0 - norm.sf(z))) for z in zs)


def selector(model: str, version: int) -> str:
    return f'model="{model}",version="{version}"'


def by_class(prom: Prometheus, metric: str, model: str, version: int, window: str) -> dict[str, float]:
    query = f"sum by (class) (increase({metric}{{{selector(model, version)}}}[{window}]))"
    return {labels.get("class", ""): value for labels, value in prom.query(query)}
