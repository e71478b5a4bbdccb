"""Triton python model: logits -> softmax over every class, and the prediction counter.

Top-k is not computed here: the output ``PROBABILITIES`` is labelled, so Triton's classification
extension answers ``class_count=k`` with "score:index:label" strings, k chosen per request.

Runs inside Triton's python backend stub (stdlib, numpy and ``triton_python_backend_utils`` only) and
is copied to ``<repository>/postprocess/1/model.py`` by :mod:`serving.repository.build`.

It also counts predictions in ``predicted_class_total{model, version, class}``: a shift in that mix
is the cheapest drift signal there is, and it needs no labels. ``model``/``version`` come from the
config parameters ``target_model``/``target_version`` (the classifier and production version the
ensemble routes to); while a release runs, the optional ``ROUTE`` input (from the router) says per
image whether production or the candidate (``candidate_model``/``candidate_version``) answered;
``ROUTE`` -1 marks the warm-up samples Triton sends at load time, which are answered but not counted.
The config parameter ``class_metric`` (``true``/``false``, default ``true``)
switches the counter off; that exists to measure its overhead, not for production use.

With ``quality_metrics`` on, each route's predictions are also scored against its version's quality
reference (``quality_prediction_total``, ``confident_prediction_total``: the ATC estimate of accuracy;
see ``quality_metrics.py``, shipped beside this file).

The metric objects are deliberately never released (:data:`_RETAINED`). Triton 2.51 reference-counts
the Prometheus series per ``MetricFamily`` object, not per series: while a reload runs, the old and
the new instance create separate families that share the same series, and when the old instance
releases its metrics the server frees the series the new instance still increments (the series
vanishes from ``/metrics``; under load we saw the server abort with heap corruption). Never releasing
keeps the series alive and counting across reloads; the cost is a few bytes per reload and series of
retired versions that stay exported, frozen, until the server restarts.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

METRIC_NAME = "predicted_class_total"
# Every MetricFamily/Metric this process created; see the module docstring for why nothing leaves.
_RETAINED: list = []


class InvalidLogits(ValueError):
    """The classifier's output cannot be turned into probabilities."""


def _param(params: dict, key: str) -> str:
    value = params.get(key, {}).get("string_value", "")
    if not value:
        raise ValueError(f"postprocess: config parameter {key!r} is missing")
    return value


def _flag(params: dict, key: str, default: bool) -> bool:
    value = params.get(key, {}).get("string_value", "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ValueError(f"postprocess: config parameter {key!r} must be true or false, got {value!r}")
    return value == "true"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[batch, classes]`` logits, computed stably in float32."""
    if logits.ndim != 2:
        raise InvalidLogits(f"expected [batch, classes] logits, got shape {list(logits.shape)}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("the classifier produced non-finite logits")
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


class TritonPythonModel:
    """Softmax, top-k and the prediction counter."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        labels_path = os.path.join(args["model_repository"], _param(params, "labels_file"))
        with open(labels_path, encoding="utf-8") as fh:
            self.labels = [line.rstrip("\n") for line in fh if line.strip()]
        logits_dims = pb_utils.get_input_config_by_name(config, "LOGITS")["dims"]
        if [len(self.labels)] != [int(d) for d in logits_dims]:
            raise ValueError(
                f"postprocess: {labels_path} has {len(self.labels)} labels, LOGITS is {logits_dims}"
            )
        target, version = _param(params, "target_model"), _param(params, "target_version")
        routes = [(target, version)]
        if params.get("candidate_model", {}).get("string_value"):
            routes.append((_param(params, "candidate_model"), _param(params, "candidate_version")))
        self.counters = []
        self.quality = _quality_counters(params, args["model_repository"], routes)
        if not _flag(params, "class_metric", default=True):
            return
        # The family must outlive every Metric made from it: once it is garbage collected, each
        # increment fails the request ("the corresponding 'MetricFamily' has been deleted").
        # _RETAINED below also keeps it for the process lifetime.
        self.family = pb_utils.MetricFamily(
            name=METRIC_NAME,
            description="Predictions served by the ensemble, by classifier, version and arg-max class",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.counters = [
            [self.family.Metric(labels={"model": m, "version": v, "class": label}) for label in self.labels]
            for m, v in routes
        ]
        _RETAINED.append((self.family, self.counters))

    def _one(self, request) -> tuple[pb_utils.InferenceResponse, np.ndarray, np.ndarray, np.ndarray]:
        logits = pb_utils.get_input_tensor_by_name(request, "LOGITS").as_numpy().astype(np.float32)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise InvalidLogits(f"expected [batch, {len(self.labels)}] logits, got {list(logits.shape)}")
        probs = softmax(logits)
        best = logits.argmax(axis=1)  # the counter counts what the classification extension ranks first
        route = pb_utils.get_input_tensor_by_name(request, "ROUTE")
        routes = np.zeros(len(best), dtype=np.int64)
        if route is not None:  # -1: a warm-up sample (config model_warmup), answered but never counted
            given = route.as_numpy().reshape(-1).astype(np.int64)
            routes = np.where(given < 0, -1, np.minimum(given, max(len(self.counters) - 1, 0)))
        response = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("PROBABILITIES", probs)])
        return response, best, routes, logits

    def execute(self, requests: list) -> list:
        responses, scored = [], []
        counts = np.zeros((max(len(self.counters), 1), len(self.labels)), dtype=np.int64)
        for request in requests:
            try:
                response, best, routes, logits = self._one(request)
                counted = routes >= 0
                np.add.at(counts, (routes[counted], best[counted]), 1)
                if self.quality is not None:
                    scored.append((logits, routes))
                responses.append(response)
            except InvalidLogits as exc:
                error = pb_utils.TritonError(f"postprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            except Exception as exc:  # one broken request must not fail the whole batch
                error = pb_utils.TritonError(
                    f"postprocess: internal error: {exc!r}", pb_utils.TritonError.INTERNAL
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        if self.quality is not None:  # queued per route: scored off the request path (quality_metrics.py)
            for logits, routes in scored:
                for route, counter in enumerate(self.quality[1]):
                    if counter is not None:
                        counter.count(logits[routes == route])  # -1 (warm-up) is no route
        # One increment per (version, class) per batch, not per request: each increment is a round
        # trip from the stub to the server process.
        for route, counters in enumerate(self.counters):
            for index in np.flatnonzero(counts[route]):
                counters[int(index)].increment(int(counts[route, index]))
        return responses

    def finalize(self) -> None:
        if self.quality is not None:  # push what is counted; the metrics stay (module docstring)
            self.quality[0].close()


def _quality_counters(params: dict, model_folder: str, routes: list[tuple[str, str]]):
    """(flusher, one ATC counter per route or ``None`` where its version has no reference), or ``None``.

    Each route is scored with *its own* version's temperature and threshold
    (``quality/<model>/<version>.json``, written by sync); see ``quality_metrics.py``.
    """
    if not _flag(params, "quality_metrics", default=False):
        return None
    if not os.path.isdir(os.path.join(model_folder, "quality")):
        return None  # sync shipped no reference: nothing to count against
    from quality_metrics import ConfidenceCounter, Flusher, load_reference

    references = [load_reference(model_folder, m, v) for m, v in routes]
    if all(r is None for r in references):
        return None
    flusher = Flusher(float(params.get("metrics_flush_s", {}).get("string_value", "1.0")))
    counters = [
        None if ref is None else ConfidenceCounter(ref, {"model": m, "version": v}, flusher)
        for (m, v), ref in zip(routes, references, strict=True)
    ]
    return flusher, counters
