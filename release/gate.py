"""The gate before any traffic: parity passed, accuracy kept, and the version answers on the live server.

The accuracy comparison is MLflow's model validation: the candidate's and production's accuracies
(each measured at export on the test split, through the artifact's own runtime, and tagged on the
version) become ``EvaluationResult``s, and ``mlflow.validate_evaluation_results`` checks the candidate
against a ``MetricThreshold`` of production's accuracy minus ``release.accuracy_margin``. Its message
names both figures, and it is what a refusal prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from common.params import ReleaseConfig
from registry import tags
from registry.aliases import Resolved

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def parity(candidate: Resolved) -> Check:
    passed = candidate.tags.get("parity_passed") == "true"
    detail = (
        f"max |Δlogit| {candidate.tags.get('parity_max_abs_logit', '?')}, "
        f"top-1 agreement {candidate.tags.get('parity_agreement', '?')}"
        if passed
        else "the version has no passed parity gate (tag parity_passed)"
    )
    return Check("parity", passed, detail)


def accuracy(candidate: Resolved, production: Resolved, cfg: ReleaseConfig) -> Check:
    """``candidate test_accuracy >= production's - margin``, judged by MLflow's model validation."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult

    mine, theirs = tags.accuracy(candidate.tags), tags.accuracy(production.tags)
    if mine is None or theirs is None:
        which = "candidate" if mine is None else "production"
        return Check("accuracy", False, f"the {which} version has no tagged test accuracy (test_accuracy)")
    threshold = theirs[0] - cfg.accuracy_margin
    thresholds = {"test_accuracy": MetricThreshold(threshold=threshold, greater_is_better=True)}
    detail = (
        f"candidate {mine[0]:.4f} on {mine[1]} images vs production {theirs[0]:.4f} on {theirs[1]}; "
        f"limit {threshold:.4f} (margin {cfg.accuracy_margin})"
    )
    try:
        mlflow.validate_evaluation_results(
            thresholds,
            EvaluationResult({"test_accuracy": mine[0]}, {}),
            EvaluationResult({"test_accuracy": theirs[0]}, {}),
        )
    except MlflowException as exc:  # ModelValidationFailedException is one
        return Check("accuracy", False, f"{detail}: {str(exc).strip()}")
    return Check("accuracy", True, detail)


def offline(candidate: Resolved, production: Resolved, cfg: ReleaseConfig) -> tuple[Check, Check]:
    """The checks that need no server, in the order they are judged: parity, then accuracy.

    A release opens with these, and so does the demo's adoption of a newly registered version:
    one definition of "good enough to serve" for both.
    """
    return parity(candidate), accuracy(candidate, production, cfg)


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
