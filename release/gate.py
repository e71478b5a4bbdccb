"""The gate before any traffic: same classes, parity passed, accuracy kept on the same data, and the
version answers on the live server.

Checks, in the order they are judged:

1. **classes** - the candidate answers in exactly production's classes, in the same order. A version
   trained on another dataset may land in the same registered model (``registry.model_prefix`` is the
   same); serving it would relabel every answer. Refused before anything else, and ``--force`` cannot
   override it.
2. **parity** - the version passed its export parity gate. Not forceable either: the registry never
   serves such a version.
3. **accuracy** - MLflow's model validation: the candidate's test accuracy (tagged at export, through
   its own runtime) against a ``MetricThreshold`` of production's accuracy minus
   ``release.accuracy_margin``, **on the same images**. Each figure carries the digest of the images
   and labels it was measured on (``test_digest``, :mod:`common.scored_split`); where the digests
   differ, production is scored on the candidate's rows (:mod:`release.baseline`), and where that is
   not possible the check fails, naming both sources. ``--force`` overrides this check only.

The figures production scores on the candidate's data (:class:`release.limits.Baseline`) also set the
live agreement limits, so the live judge and the gate hold the candidate to one requirement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.params import ReleaseConfig
from registry import tags
from registry.aliases import Resolved
from release.limits import Baseline

log = logging.getLogger(__name__)

# candidate's test digest, its image count -> production's figures on those rows, or a reason why not
Scorer = Callable[[str, int], "Baseline | str"]


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    forceable: bool = True  # --force may override a failure (accuracy, live); never classes or parity


GATE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GateResult:
    """The offline checks in order, and production's figures on the candidate's data."""

    checks: tuple[Check, ...]
    baseline: Baseline | None = None

    def __getitem__(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    @property
    def failing(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def unforceable(self) -> list[Check]:
        return [c for c in self.failing if not c.forceable]

    def with_check(self, check: Check) -> GateResult:
        return GateResult((*self.checks, check), self.baseline)

    def to_record(self) -> dict[str, object]:
        """The JSON the release record keeps of a gate's verdict, with the shape's version.

        Compact on purpose (the record is one MLflow tag): each check's outcome, and production's
        figure the accuracy check compared against; the details are in the record's ``failed``.
        """
        checks = [{"name": c.name, "passed": c.passed, "forceable": c.forceable} for c in self.checks]
        baseline = None
        if self.baseline is not None:
            baseline = {k: getattr(self.baseline, k) for k in ("accuracy", "images", "basis")}
        return {"format_version": GATE_FORMAT_VERSION, "checks": checks, "baseline": baseline}


def classes(candidate: tuple[str, ...], production: tuple[str, ...]) -> Check:
    if candidate == production:
        return Check("classes", True, f"{len(candidate)} classes, as production", forceable=False)
    return Check(
        "classes",
        False,
        f"the candidate answers in {list(candidate)}, production in {list(production)}: "
        "a version of another dataset belongs in a registered model of its own (registry.model_prefix)",
        forceable=False,
    )


def parity(candidate: Resolved) -> Check:
    passed = candidate.tags.get("parity_passed") == "true"
    detail = (
        f"max |Δlogit| {candidate.tags.get('parity_max_abs_logit', '?')}, "
        f"top-1 agreement {candidate.tags.get('parity_agreement', '?')}"
        if passed
        else "the version has no passed parity gate (tag parity_passed)"
    )
    return Check("parity", passed, detail, forceable=False)


def baseline(candidate: Resolved, production: Resolved, scorer: Scorer | None) -> Baseline | str:
    """Production's accuracy on the images the candidate was scored on, or why it is not known."""
    mine = tags.accuracy(candidate.tags)
    theirs = tags.accuracy(production.tags)
    ours, their_digest = tags.test_digest(candidate.tags), tags.test_digest(production.tags)
    if mine is None:
        return "the candidate version has no tagged test accuracy (test_accuracy)"
    if ours is not None and ours == their_digest and theirs is not None:
        return Baseline(theirs[0], theirs[1], tags.class_precision(production.tags), f"same test data {ours}")
    if ours is None:
        return (
            "the candidate's test accuracy names no test data (no test_digest: exported before digests "
            "were recorded), so it cannot be compared with production's; re-export it"
        )
    other = (
        f"production was scored on other data ({their_digest or 'unrecorded'}) than the candidate ({ours})"
    )
    if scorer is None:
        return other
    try:
        scored = scorer(ours, mine[1])
    except Exception as exc:  # a registry, download or runtime failure: a refusal that says so
        scored = f"{type(exc).__name__}: {exc}"
    if isinstance(scored, str):
        return f"{other}, and cannot be scored on the candidate's: {scored}"
    return scored


def accuracy(candidate: Resolved, found: Baseline | str, cfg: ReleaseConfig) -> Check:
    """``candidate >= production - margin`` on the same images, judged by MLflow's model validation."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult

    if isinstance(found, str):
        return Check("accuracy", False, found)
    mine = tags.accuracy(candidate.tags)
    assert mine is not None  # baseline() returned a reason otherwise
    threshold = found.accuracy - cfg.accuracy_margin
    thresholds = {"test_accuracy": MetricThreshold(threshold=threshold, greater_is_better=True)}
    detail = (
        f"candidate {mine[0]:.4f} vs production {found.accuracy:.4f} on the same {mine[1]} images "
        f"({found.basis}); limit {threshold:.4f} (margin {cfg.accuracy_margin})"
    )
    try:
        mlflow.validate_evaluation_results(
            thresholds,
            EvaluationResult({"test_accuracy": mine[0]}, {}),
            EvaluationResult({"test_accuracy": found.accuracy}, {}),
        )
    except MlflowException as exc:  # ModelValidationFailedException is one
        return Check("accuracy", False, f"{detail}: {str(exc).strip()}")
    return Check("accuracy", True, detail)


def offline(
    candidate: Resolved,
    production: Resolved,
    cfg: ReleaseConfig,
    candidate_classes: tuple[str, ...],
    production_classes: tuple[str, ...],
    scorer: Scorer | None = None,
) -> GateResult:
    """The checks that need no server: classes (first, alone if it fails), parity, accuracy.

    A release opens with these, and so does the demo's adoption of a newly registered version:
    one definition of "good enough to serve" for both.
    """
    same = classes(candidate_classes, production_classes)
    if not same.passed:
        return GateResult((same,))
    found = baseline(candidate, production, scorer)
    checks = (same, parity(candidate), accuracy(candidate, found, cfg))
    return GateResult(checks, found if isinstance(found, Baseline) else None)


def answers(grpc_url: str, model: str, version: int, input_name: str, output_name: str) -> Check:
    """The loaded version answers a batch of 4 with finite logits of the served shape."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(grpc_url.removeprefix("grpc://"))
    try:
        if not client.is_model_ready(model, str(version)):
            return Check("live", False, f"{model}:{version} is not READY on {grpc_url}")
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
        inp = grpcclient.InferInput(input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer(model, [inp], model_version=str(version)).as_numpy(output_name)
    except InferenceServerException as exc:
        return Check("live", False, f"{model}:{version} failed a request: {exc.message()}")
    finally:
        client.close()
    if out is None or out.ndim != 2 or out.shape[0] != 4 or not np.all(np.isfinite(out)):
        shape = None if out is None else list(out.shape)
        return Check("live", False, f"{model}:{version} answered {shape}, not finite [4, classes] logits")
    return Check("live", True, f"{model}:{version} READY, answered 4 images")
