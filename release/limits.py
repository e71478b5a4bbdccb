"""The live limits of a release, derived once at the gate from what the gate requires of a candidate.

Agreement is the one label-free figure that can see a wrong answer, so its limits must come from a
requirement, never from the candidate's own claims. Two classifiers with accuracies ``a`` and ``b`` on
a set of images agree on at least ``a + b - 1`` of them (at worst their errors are disjoint). So:

* **overall** - the gate requires a candidate's accuracy ``>= p - accuracy_margin``, ``p`` being
  production's accuracy *on the candidate's test data* (like with like). A candidate the gate would
  pass agrees with production on at least ``p + (p - accuracy_margin) - 1``; the limit is that minus
  ``agreement_slack`` (live traffic is not the test split).
* **per class** - on the images production calls ``c`` production is right with its precision
  ``q_c``. A candidate that keeps, there, within ``class_margin`` of production's accuracy agrees on
  at least ``2 q_c - class_margin - 1`` of them; the limit is that minus ``agreement_slack``. A label
  swap of two classes agrees on about none of either class's images, whatever the overall figure.

The candidate's own tagged accuracy enters nowhere: a forced release of a model that admits to being
worse is judged exactly like one that does not. ``release.min_agreement`` and
``release.min_class_agreement`` replace a derived limit with a fixed one (a model too weak for the
bounds to mean anything, such as the tests' tiny one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.params import ReleaseConfig


@dataclass(frozen=True)
class Baseline:
    """Production's figures on the candidate's test data, as the gate measured or matched them."""

    accuracy: float
    images: int
    class_precision: dict[str, float] = field(default_factory=dict)  # empty: unknown per class
    basis: str = ""  # where the figures come from (same digest / scored now / production's own data)


@dataclass(frozen=True)
class Limits:
    """What the judge holds the candidate's agreement to; stored in the release record."""

    agreement: float | None
    class_agreement: dict[str, float] = field(default_factory=dict)
    basis: str = ""

    def to_dict(self) -> dict:
        return {
            "agreement": self.agreement,
            "class_agreement": dict(self.class_agreement),
            "basis": self.basis,
        }

    @classmethod
    def from_dict(cls, data: dict | None) -> Limits | None:
        if not data:
            return None
        agreement = data.get("agreement")
        return cls(
            None if agreement is None else float(agreement),
            {str(k): float(v) for k, v in (data.get("class_agreement") or {}).items()},
            str(data.get("basis", "")),
        )


def derive(baseline: Baseline | None, classes: tuple[str, ...], cfg: ReleaseConfig) -> Limits:
    """The overall and per-class agreement limits (see the module docstring)."""
    slack = cfg.agreement_slack
    if cfg.min_agreement is not None:
        overall: float | None = cfg.min_agreement
        basis = f"release.min_agreement {cfg.min_agreement}"
    elif baseline is None:
        overall, basis = None, "no production accuracy to derive from"
    else:
        p = baseline.accuracy
        overall = max(0.0, p + (p - cfg.accuracy_margin) - 1.0 - slack)
        basis = (
            f"production {p:.4f} on {baseline.images} images ({baseline.basis}), "
            f"accuracy_margin {cfg.accuracy_margin}, class_margin {cfg.class_margin}, slack {slack}"
        )
    per_class: dict[str, float] = {}
    for name in classes:
        if cfg.min_class_agreement is not None:
            per_class[name] = cfg.min_class_agreement
        elif baseline is not None and name in baseline.class_precision:
            q = baseline.class_precision[name]
            per_class[name] = max(0.0, 2 * q - cfg.class_margin - 1.0 - slack)
        # a class of unknown precision gets no per-class limit: the overall accuracy would overstate
        # the hard classes' (cat ~0.83 against 0.93) and roll good candidates back
    if cfg.min_class_agreement is not None:
        basis += f"; release.min_class_agreement {cfg.min_class_agreement}"
    return Limits(overall, per_class, basis)
