"""The release judge's label-free accuracy figures: the candidate's ATC estimate on live traffic.

Both served python models count, per version and against *that version's* quality reference, how
many answers were above its ATC threshold (:mod:`serving.triton.python_models.quality_metrics`):

* in **shadow** the router scores production's and the candidate's answers to the *same* images
  (``shadow_confident_prediction_total{scorer}``), so the two estimates differ only by the models;
* in **canary** each version's own answers are scored by postprocess (``confident_prediction_total``),
  on random halves of the same traffic.

Two figures, each a ratio of counts judged like the others (:mod:`release.figures`): it *breaches*
only when its whole Clopper-Pearson interval at ``confidence_z`` lies beyond the limit, and only past
``min_images`` scored images, so a handful of unsure answers cannot roll a good candidate back.

* ``estimated_accuracy`` - the candidate's estimate against production's minus ``accuracy_margin``
  (the gate's own margin). Production's estimate is noisy too, so the limit is its lower bound: the
  candidate breaches only when it is surely below production's surely-lowest value, and is within
  while it is no more than two standard deviations of chance below the limit: two versions that are
  equally sure differ by about one on any window, and a step must be able to pass them.
* ``estimate_vs_reference`` - the candidate's estimate against its own held-out accuracy minus
  ``monitoring.accuracy_drop``: a candidate that is less sure on live traffic than it was on the
  split it was calibrated on rolls back, even when its answers mostly agree with production's.

A version registered without a quality reference has no such series: the figure reads "no
reference" and neither blocks nor passes the step on its own (``within`` stays true).
"""

from __future__ import annotations

import math

from common.promql import Prometheus
from release.figures import Figure, interval
from release.figures import selector as _sel

# A candidate as good as production differs from it by chance: "within" allows two standard deviations
# of the difference (one look passes such a candidate 98 % of the time; looks repeat every check).
CHANCE_SD = 2.0


def _increase(prom: Prometheus, metric: str, where: str, window: str) -> float:
    return prom.scalar(f"sum(increase({metric}{{{where}}}[{window}]))") or 0.0


def _counts(prom: Prometheus, shadow: bool, model: str, version: int, window: str, scorer: str):
    """(confident, scored) for one version's answers in the step's window."""
    if shadow:
        where = f'{_sel(model, version)},scorer="{scorer}"'
        prefix = "shadow_"
    else:
        where, prefix = _sel(model, version), ""
    return (
        _increase(prom, f"{prefix}confident_prediction_total", where, window),
        _increase(prom, f"{prefix}quality_prediction_total", where, window),
    )


def estimate_figures(
    prom: Prometheus,
    candidate: tuple[str, int],
    production: tuple[str, int],
    shadow: bool,
    window: str,
    z: float,
    accuracy_margin: float,
    accuracy_drop: float | None,
    min_images: int,
) -> list[Figure]:
    (cm, cv), (pm, pv) = candidate, production
    k_c, n_c = _counts(prom, shadow, cm, cv, window, "candidate")
    if shadow:  # production's answers to the very images the candidate answered
        k_p, n_p = _counts(prom, True, cm, cv, window, "production")
    else:
        k_p, n_p = _counts(prom, False, pm, pv, window, "")
    reference = prom.scalar(f"max(quality_reference_accuracy{{{_sel(cm, cv)}}})")
    if n_c <= 0 and reference is None:
        why = "no quality reference for the candidate"
        return [
            Figure("estimated_accuracy", None, None, False, True, why),
            Figure("estimate_vs_reference", None, None, False, True, why),
        ]
    value = k_c / n_c if n_c else None
    low_c, high_c = interval(k_c, n_c, z)
    judged = n_c >= min_images
    out = []
    if n_p > 0:
        low_p, _ = interval(k_p, n_p, z)
        limit = k_p / n_p - accuracy_margin
        pooled = (k_c + k_p) / (n_c + n_p)
        chance = CHANCE_SD * math.sqrt(pooled * (1 - pooled) * (1 / max(n_c, 1) + 1 / n_p))
        out.append(
            Figure(
                "estimated_accuracy",
                value,
                limit,
                breached=judged and high_c < low_p - accuracy_margin,
                within=value is not None and value >= limit - chance,
                detail=f"ATC share: candidate {k_c:.0f}/{n_c:.0f}, production {k_p:.0f}/{n_p:.0f}",
            )
        )
    else:
        out.append(Figure("estimated_accuracy", value, None, False, True, "production scored nothing yet"))
    if reference is not None and accuracy_drop is not None:
        limit = reference - accuracy_drop
        chance = CHANCE_SD * math.sqrt(max(reference * (1 - reference), 1e-6) / max(n_c, 1))
        out.append(
            Figure(
                "estimate_vs_reference",
                value,
                limit,
                breached=judged and high_c < limit,
                within=value is not None and value >= limit - chance,
                detail=f"held-out {reference:.4f} - {accuracy_drop:g}; interval [{low_c:.3f}, {high_c:.3f}]",
            )
        )
    else:
        out.append(Figure("estimate_vs_reference", value, None, False, True, "no quality reference"))
    return out
