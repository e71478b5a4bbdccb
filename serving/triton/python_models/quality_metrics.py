"""Triton-side quality counters: confidence against a version's ATC threshold, and input statistics.

Shipped beside ``postprocess.py``, ``preprocess.py`` and the router (stdlib, numpy and
``triton_python_backend_utils`` only). Each version's numbers come from *its own* quality reference,
which ``sync`` copies into the python model's folder as ``quality/<model>/<version>.json``; a route
without one (a version registered before references existed) is simply not counted.

Series (``model``/``version`` name the classifier version the reference belongs to):

* ``quality_prediction_total`` and ``confident_prediction_total`` - predictions counted, and those
  whose temperature-scaled top probability is above the version's ATC threshold: their ratio is the
  ATC estimate of accuracy (:mod:`monitoring.accuracy_estimate`);
* ``shadow_quality_prediction_total`` and ``shadow_confident_prediction_total{scorer}`` - the same
  on the images the release router shadows, for production's and the candidate's answers to the
  very same images (``model``/``version``: the candidate, as the router's other shadow series);
* ``quality_reference_accuracy`` and ``quality_reference_class_ratio{class}`` (gauges) - the held-out
  accuracy and label mix the estimate and the class-mix bound are read against;
* ``input_statistic_total{statistic, bin}`` and ``input_statistic_reference_ratio{statistic, bin}`` -
  live and reference histograms of the input statistics (:mod:`input_statistics`).

Cost: a ``Metric.increment`` is a message from the stub to the server (30-80 us here), and numpy
costs most per call. The request path only queues references to what it decoded or computed; a
daemon thread measures everything queued in one batch and pushes the counts every
``metrics_flush_s`` (and at ``finalize``), so a busy server pays a handful of messages a second
whatever its request rate. The series lag the traffic by at most that interval. Metric objects
are never released, for the reason ``postprocess.py`` gives (Triton 2.51 frees shared series when
an old instance lets go).
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from input_statistics import STATISTICS, bin_index, measure

_RETAINED: list = []
_FAMILIES: dict[str, object] = {}
DESCRIPTIONS = {
    "quality_prediction_total": ("Predictions scored against the version's quality reference", "COUNTER"),
    "confident_prediction_total": (
        "Predictions whose calibrated top probability is above the version's ATC threshold",
        "COUNTER",
    ),
    "shadow_quality_prediction_total": (
        "Shadowed images scored by a version's quality reference (scorer: whose logits and reference)",
        "COUNTER",
    ),
    "shadow_confident_prediction_total": (
        "Shadowed images above the scorer's ATC threshold; model/version: the release's candidate",
        "COUNTER",
    ),
    "quality_reference_accuracy": ("Accuracy of the version on its held-out reference split", "GAUGE"),
    "quality_reference_class_ratio": ("Label mix of the version's held-out reference split", "GAUGE"),
    "input_statistic_total": ("Served images per input-statistic bin of the version's reference", "COUNTER"),
    "input_statistic_reference_ratio": ("Reference share of each input-statistic bin", "GAUGE"),
}


def family(name: str):
    """One ``MetricFamily`` per name per process, kept for the process lifetime."""
    if name not in _FAMILIES:
        description, kind = DESCRIPTIONS[name]
        _FAMILIES[name] = pb_utils.MetricFamily(
            name=name, description=description, kind=getattr(pb_utils.MetricFamily, kind)
        )
        _RETAINED.append(_FAMILIES[name])
    return _FAMILIES[name]


def metric(name: str, labels: dict[str, str]):
    made = family(name).Metric(labels=labels)
    _RETAINED.append(made)
    return made


def load_reference(model_folder: str, model: str, version: str) -> dict | None:
    """``quality/<model>/<version>.json`` of a python model's folder, or ``None`` if sync wrote none."""
    path = os.path.join(model_folder, "quality", model, f"{version}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class Flusher:
    """The quality counters' worker: the request path only queues what it saw; a daemon thread,
    every ``period_s`` (and at ``finalize``), computes the statistics of everything queued in one
    numpy pass per counter and pushes the counts to the server.

    Numpy's cost per call, not per image, dominates small batches (about 100 us per ``execute()``
    for the six statistics of one image, 13 us per image in a batch of hundreds), so the work moves
    off the request path and into batches of a second's traffic.
    """

    MAX_QUEUED = 50_000  # items waiting for the thread; past this the request path drains itself

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.lock = threading.Lock()
        self.pending: dict[int, tuple[object, float]] = {}
        self.queued: list[tuple[object, tuple]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="quality-metrics", daemon=True)
        self.thread.start()

    def defer(self, counter, *arrays) -> None:
        """Queue ``counter.process(*arrays)`` for the thread (references only: no copy, no numpy)."""
        with self.lock:
            self.queued.append((counter, arrays))
            backlog = len(self.queued) > self.MAX_QUEUED
        if backlog:  # the thread fell behind (a stalled push): never let the queue grow unbounded
            self.drain()

    def add_many(self, items: list) -> None:
        """``(counter, value)`` pairs under one lock."""
        with self.lock:
            for counter, value in items:
                if value:
                    key = id(counter)
                    self.pending[key] = (counter, self.pending.get(key, (counter, 0.0))[1] + float(value))

    def drain(self) -> None:
        """Process everything queued, one batch per counter."""
        with self.lock:
            queued, self.queued = self.queued, []
        batches: dict[int, tuple[object, list]] = {}
        for counter, arrays in queued:
            batches.setdefault(id(counter), (counter, []))[1].append(arrays)
        for counter, parts in batches.values():
            counter.process(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def flush(self) -> None:
        self.drain()
        with self.lock:
            pending, self.pending = self.pending, {}
        for counter, value in pending.values():
            counter.increment(value)

    def _run(self) -> None:
        while not self.stop.wait(self.period_s):
            try:
                self.flush()
            except Exception as exc:  # a failed push must not kill the thread; the next one retries
                print(f"quality metrics: push failed: {exc!r}", flush=True)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=max(self.period_s, 1.0) * 2)
        self.flush()


class ConfidenceCounter:
    """The ATC counters of one classifier version (postprocess and the router's shadow copies)."""

    def __init__(self, reference: dict, labels: dict[str, str], flusher: Flusher, prefix: str = "") -> None:
        self.temperature = float(reference["temperature"])
        self.threshold = float(reference["threshold"])
        self.flusher = flusher
        self.predictions = metric(f"{prefix}quality_prediction_total", labels)
        self.confident = metric(f"{prefix}confident_prediction_total", labels)
        if not prefix:  # the reference gauges belong to the version, once
            metric("quality_reference_accuracy", labels).set(float(reference["accuracy"]))
            for name, share in zip(reference["classes"], reference["label_ratios"], strict=True):
                metric("quality_reference_class_ratio", {**labels, "class": name}).set(float(share))

    def confident_count(self, logits: np.ndarray) -> int:
        z = logits.astype(np.float64) / self.temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        top = z.max(axis=1) / z.sum(axis=1)
        return int(np.count_nonzero(top > self.threshold))

    def count(self, logits: np.ndarray) -> None:
        """Request path: queue ``[n, classes]`` logits for :meth:`process`."""
        if len(logits):
            self.flusher.defer(self, logits)

    def process(self, logits: np.ndarray) -> None:
        self.flusher.add_many(
            [(self.predictions, len(logits)), (self.confident, self.confident_count(logits))]
        )


class StatisticCounter:
    """Input-statistic histograms of one version's reference bins (preprocess and the router)."""

    def __init__(self, reference: dict, labels: dict[str, str], flusher: Flusher) -> None:
        self.flusher = flusher
        self.edges = [reference["statistics"][name]["edges"] for name in STATISTICS]
        self.counters = []
        for name, edges in zip(STATISTICS, self.edges, strict=True):
            ratios = reference["statistics"][name]["ratios"]
            row = []
            for b in range(len(edges) + 1):
                bin_labels = {**labels, "statistic": name, "bin": str(b)}
                row.append(metric("input_statistic_total", bin_labels))
                metric("input_statistic_reference_ratio", bin_labels).set(float(ratios[b]))
            self.counters.append(row)

    def count(self, pixels: np.ndarray, encoded_bytes: np.ndarray, original_pixels: np.ndarray) -> None:
        """Request path: queue uint8 ``N x 3 x H x W`` images as decoded, their file sizes and their
        sizes as sent, for :meth:`process`."""
        if len(pixels):
            self.flusher.defer(self, pixels, encoded_bytes, original_pixels)

    def process(self, pixels: np.ndarray, encoded_bytes: np.ndarray, original_pixels: np.ndarray) -> None:
        values = measure(pixels, encoded_bytes, original_pixels)
        items = []
        for i, edges in enumerate(self.edges):
            counts = np.bincount(bin_index(values[:, i], edges), minlength=len(edges) + 1)
            items += [(self.counters[i][int(b)], int(counts[b])) for b in np.flatnonzero(counts)]
        self.flusher.add_many(items)
