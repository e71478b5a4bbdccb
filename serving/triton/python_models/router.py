"""Triton python model: the release's router between production and a candidate (BLS).

It is the public ensemble's first step while a release runs (``router -> postprocess``, instead of
``preprocess -> classifier -> postprocess``) and is absent otherwise, so steady-state serving pays
nothing for it. It decodes the images itself, with preprocess's own :class:`Decoder`
(``image_decoding.py``, shipped beside this file), and calls the chosen classifier version through
BLS: the path keeps two python steps, and routing costs a BLS call instead of an ensemble step. Per request:

* **canary** - the request is answered by the candidate with probability ``canary_weight``. A
  request that carries the ``route-key`` parameter (or the ``route-key`` header, which the server
  forwards as a parameter) is routed by a hash of the key instead of a coin: one key always lands on
  the same version while the weight stays put, and a rising weight only moves keys to the candidate.
* **shadow** - of the requests production answers, ``shadow_fraction`` are also run on the
  candidate *after* the caller's answer is ready; the candidate's answer is compared with
  production's (top-1 equal or not) and thrown away. The comparison is counted per candidate version
  (``shadow_agreement_total``, ``shadow_predicted_class_total``): a live, label-free comparison.

Requests of one dynamic batch that go to the same version share one BLS call, so batching survives
the routing. A candidate that fails a canary request is counted by Triton as that version's failure
and the request is answered by production instead: a broken candidate costs the caller latency,
never an error. ``ROUTE`` (0 production, 1 candidate, per image) tells postprocess which version's
label its prediction counter uses, so the class mix splits per version.

Runs inside Triton's python backend stub: stdlib, numpy and ``triton_python_backend_utils`` only.
The metric objects are never released, for the reason :mod:`postprocess` gives.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import threading
import time
from typing import NamedTuple

import numpy as np
import triton_python_backend_utils as pb_utils

# A sibling module: serving/repository/build.py ships image_decoding.py beside this file, and the
# stub puts the version folder on sys.path.
from image_decoding import Decoder, InvalidImage

PRODUCTION, CANDIDATE = 0, 1
# Upper bounds (ms) of the latency histogram's buckets: ten per decade from 1 ms to 31.6 s, so a
# quantile read off them is off by at most a factor 1.26 (the release judge rounds in the
# candidate's favour), from a small model's milliseconds to a cold WRN-28-10 batch on two CPU cores.
LATENCY_BUCKETS_MS = tuple(float(f"{10 ** (k / 10):.3g}") for k in range(46))
_RETAINED: list = []


class RouteError(RuntimeError):
    """A BLS call failed; carries Triton's message."""


def _param(params: dict, key: str) -> str:
    value = params.get(key, {}).get("string_value", "")
    if not value:
        raise ValueError(f"router: config parameter {key!r} is missing")
    return value


def key_share(key: str) -> float:
    """A stable number in [0, 1) for a routing key (the same on every server and every restart)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class _Target:
    def __init__(self, params: dict, role: str) -> None:
        self.model = _param(params, f"{role}_model")
        self.version = int(_param(params, f"{role}_version"))
        self.input = _param(params, f"{role}_input")
        self.output = _param(params, f"{role}_output")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.model,
            model_version=self.version,
            requested_output_names=[self.output],
            inputs=[pb_utils.Tensor(self.input, batch)],
        )
        response = request.exec()
        if response.has_error():
            raise RouteError(f"{self.model}:{self.version}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, self.output).as_numpy()


class TritonPythonModel:
    """Routes each request to production or the candidate, and shadows a share of production's."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.production = _Target(params, "production")
        self.candidate = _Target(params, "candidate")
        self.shadow_fraction = float(_param(params, "shadow_fraction"))
        self.canary_weight = float(_param(params, "canary_weight"))
        self.route_key = _param(params, "route_key").lower()
        height, width = (int(d) for d in _param(params, "image_size").split("x"))
        self.decoder = Decoder.from_config(params, (width, height))
        labels_path = os.path.join(args["model_repository"], _param(params, "labels_file"))
        with open(labels_path, encoding="utf-8") as fh:
            self.labels = [line.rstrip("\n") for line in fh if line.strip()]
        self.random = random.Random()
        labels = {"model": self.candidate.model, "version": str(self.candidate.version)}
        agreement = pb_utils.MetricFamily(
            name="shadow_agreement_total",
            description="Shadowed images whose candidate top-1 equals production's (agree=true) or not",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        classes = pb_utils.MetricFamily(
            name="shadow_predicted_class_total",
            description="The candidate's predictions on shadowed images (never served), by arg-max class",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        # [production's class] -> (agree, disagree)
        self.agreement = [
            (
                agreement.Metric(labels={**labels, "agree": "true", "class": name}),
                agreement.Metric(labels={**labels, "agree": "false", "class": name}),
            )
            for name in self.labels
        ]
        self.shadow_classes = [classes.Metric(labels={**labels, "class": name}) for name in self.labels]
        latency = pb_utils.MetricFamily(
            name="release_route_latency_ms",
            description="Wall time of each of the router's calls to a classifier version (one per batch)",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        buckets = [float(b) for b in LATENCY_BUCKETS_MS]
        self.latency = {
            (role, path): latency.Metric(
                labels={"model": target.model, "version": str(target.version), "path": path}, buckets=buckets
            )
            for role, target, path in (
                (PRODUCTION, self.production, "served"),
                (CANDIDATE, self.candidate, "served"),
                (CANDIDATE, self.candidate, "shadow"),
            )
        }
        failures = pb_utils.MetricFamily(
            name="release_route_failure_total",
            description="The router's calls to a classifier version that failed, per version and path",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.failures = {
            key: failures.Metric(labels={"model": t.model, "version": str(t.version), "path": key[1]})
            for key, t in (
                ((PRODUCTION, "served"), self.production),
                ((CANDIDATE, "served"), self.candidate),
                ((CANDIDATE, "shadow"), self.candidate),
            )
        }
        _RETAINED.append((latency, self.latency, failures, self.failures))
        self.halt_path = os.path.join(args["model_repository"], _param(params, "halt_file"))
        self.halted = False
        dropped = pb_utils.MetricFamily(
            name="shadow_dropped_total",
            description="Images not shadowed because the candidate fell behind (its queue was full)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.dropped = dropped.Metric(labels=labels)
        _RETAINED.append((agreement, classes, dropped, self.agreement, self.shadow_classes))
        _RETAINED.append(self.dropped)
        self.queue: queue.Queue = queue.Queue(maxsize=int(_param(params, "shadow_queue")))
        self.quality = _quality(params, args["model_repository"], self.production, self.candidate)
        self.worker = threading.Thread(target=self._worker, name="shadow", daemon=True)
        self.worker.start()

    def _check_halt(self) -> None:
        """Latch ``halted`` once ``halt.json`` names this router's candidate (a stale file does not)."""
        try:
            with open(self.halt_path, encoding="utf-8") as fh:
                order = json.load(fh)
        except (OSError, ValueError):
            return
        if isinstance(order, dict) and (order.get("candidate_model"), order.get("candidate_version")) == (
            self.candidate.model,
            self.candidate.version,
        ):
            self.halted = True
            self.canary_weight, self.shadow_fraction = 0.0, 0.0
            pb_utils.Logger.log_warn(f"router: halted ({order.get('reason', 'no reason given')})")

    def _choose(self, request) -> int:
        if self.canary_weight <= 0.0:
            return PRODUCTION
        if self.canary_weight >= 1.0:
            return CANDIDATE
        try:
            params = json.loads(request.parameters() or "{}")
        except ValueError:
            params = {}
        key = next((str(v) for k, v in params.items() if k.lower() == self.route_key), None)
        share = key_share(key) if key is not None else self.random.random()
        return CANDIDATE if share < self.canary_weight else PRODUCTION

    def _decode(self, request, counted: list) -> np.ndarray:
        images, decoded = self.decoder.decoded(pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy())
        counted.append(decoded)
        return images

    def execute(self, requests: list) -> list:
        if not self.halted and os.path.exists(self.halt_path):
            self._check_halt()
        inputs: list = [None] * len(requests)
        errors: list = [None] * len(requests)
        codes: list = [pb_utils.TritonError.UNAVAILABLE] * len(requests)
        counted: list = []
        for i, request in enumerate(requests):
            try:
                inputs[i] = self._decode(request, counted)
            except InvalidImage as exc:  # the caller's fault: its own error, the batch goes on
                errors[i], codes[i] = f"preprocess: {exc}", pb_utils.TritonError.INVALID_ARG
            except Exception as exc:
                errors[i], codes[i] = f"preprocess: internal error: {exc!r}", pb_utils.TritonError.INTERNAL
        if self.quality.statistics is not None:  # queued: measured off the request path, as preprocess
            for decoded in counted:
                self.quality.statistics.count(*decoded)
        routes = [self._choose(r) if errors[i] is None else PRODUCTION for i, r in enumerate(requests)]
        logits: list = [None] * len(requests)
        for route, target in ((CANDIDATE, self.candidate), (PRODUCTION, self.production)):
            chosen = [i for i, r in enumerate(routes) if r == route and errors[i] is None]
            if not chosen:
                continue
            batch = np.concatenate([inputs[i] for i in chosen])
            started = time.monotonic()
            try:
                out = target.infer(batch)
            except RouteError as exc:
                self.failures[(route, "served")].increment(1)
                if route == CANDIDATE:  # Triton counted the failure on the candidate; production answers
                    for i in chosen:
                        routes[i] = PRODUCTION
                    continue
                for i in chosen:
                    errors[i] = f"router: {exc}"
                continue
            self.latency[(route, "served")].observe((time.monotonic() - started) * 1000.0)
            start = 0
            for i in chosen:
                logits[i] = out[start : start + len(inputs[i])]
                start += len(inputs[i])
        responses = []
        for i in range(len(requests)):
            if errors[i] is not None:
                error = pb_utils.TritonError(errors[i], codes[i])
                response = pb_utils.InferenceResponse(output_tensors=[], error=error)
            else:
                route = np.full((len(inputs[i]), 1), routes[i], dtype=np.int32)
                response = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LOGITS", logits[i].astype(np.float32)),
                        pb_utils.Tensor("ROUTE", route),
                    ]
                )
            responses.append(response)
        shadowed = [
            i
            for i, r in enumerate(routes)
            if r == PRODUCTION and errors[i] is None and self.random.random() < self.shadow_fraction
        ]
        if shadowed:  # the worker thread runs them after this batch's answers are gone
            try:
                self.queue.put_nowait(([inputs[i] for i in shadowed], [logits[i] for i in shadowed]))
            except queue.Full:
                self.dropped.increment(sum(len(inputs[i]) for i in shadowed))
        return responses

    def _worker(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            try:
                self._shadow(*item)
            except Exception as exc:  # the shadow must never take the router down
                pb_utils.Logger.log_warn(f"router: shadow comparison failed: {exc!r}")

    def _shadow(self, inputs: list, served: list) -> None:
        if self.halted:
            return
        started = time.monotonic()
        try:
            their_logits = self.candidate.infer(np.concatenate(inputs))
        except RouteError:
            self.failures[(CANDIDATE, "shadow")].increment(1)
            return
        self.latency[(CANDIDATE, "shadow")].observe((time.monotonic() - started) * 1000.0)
        our_logits = np.concatenate(served)
        for scorer, logits in zip(self.quality.shadow, (our_logits, their_logits), strict=True):
            if scorer is not None:  # both versions' confidence on the very same images
                scorer.count(logits)
        theirs, ours = their_logits.argmax(axis=1), our_logits.argmax(axis=1)
        same = theirs == ours
        for index in np.unique(ours):
            mine = ours == index
            agreed = int(same[mine].sum())
            agree, disagree = self.agreement[int(index)]
            if agreed:
                agree.increment(agreed)
            if int(mine.sum()) - agreed:
                disagree.increment(int(mine.sum()) - agreed)
        counts = np.bincount(theirs, minlength=len(self.labels))
        for index in np.flatnonzero(counts):
            self.shadow_classes[int(index)].increment(int(counts[index]))

    def finalize(self) -> None:
        self.queue.put(None)  # the metrics stay in _RETAINED on purpose
        self.worker.join(timeout=5)
        if self.quality.flusher is not None:
            self.quality.flusher.close()


class _Quality(NamedTuple):
    flusher: object | None
    statistics: object | None  # input statistics on production's bins, as preprocess counts them
    shadow: tuple  # (production's scorer, candidate's scorer) on shadowed images; None without a reference


def _quality(params: dict, model_folder: str, production: _Target, candidate: _Target) -> _Quality:
    """The router's quality counters (``quality_metrics.py``), each from its own version's reference."""
    if params.get("quality_metrics", {}).get("string_value", "false") != "true":
        return _Quality(None, None, (None, None))
    if not os.path.isdir(os.path.join(model_folder, "quality")):
        return _Quality(None, None, (None, None))  # sync shipped no reference
    from quality_metrics import ConfidenceCounter, Flusher, StatisticCounter, load_reference

    refs = [load_reference(model_folder, t.model, str(t.version)) for t in (production, candidate)]
    if all(r is None for r in refs):
        return _Quality(None, None, (None, None))
    flusher = Flusher(float(params.get("metrics_flush_s", {}).get("string_value", "1.0")))
    own = {"model": production.model, "version": str(production.version)}
    statistics = None if refs[0] is None else StatisticCounter(refs[0], own, flusher)
    labels = {"model": candidate.model, "version": str(candidate.version)}
    shadow = tuple(
        None if ref is None else ConfidenceCounter(ref, {**labels, "scorer": role}, flusher, prefix="shadow_")
        for role, ref in zip(("production", "candidate"), refs, strict=True)
    )
    return _Quality(flusher, statistics, shadow)
