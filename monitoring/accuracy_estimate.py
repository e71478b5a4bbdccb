"""Accuracy without labels: temperature scaling, ATC, and the class-mix bound that caps it.

Labels never come back from production, but two things do: how sure the model is of each answer,
and which classes it answers. This module turns both into an estimate of accuracy.

* **Temperature** (Guo et al., ICML 2017): one scalar ``T`` fitted on held-out labelled images by
  minimising the negative log-likelihood of ``softmax(logits / T)``. Label smoothing leaves a model
  under-confident in-distribution and the score ordering slightly off; ``T`` fixes the scale.
* **ATC** (Average Thresholded Confidence; Garg et al., ICLR 2022): on the held-out split, the
  threshold ``t`` above which the share of (calibrated) top probabilities equals the accuracy. On new
  data the share above ``t`` is the estimate. It is a count, so the server can keep it as a counter.
* **Class-mix bound.** Under a covariate shift the classes of the *images* keep their mix ``q`` (the
  held-out split's), so at most ``sum_c min(p_c, q_c) = 1 - TV(p, q)`` of the answers can be right,
  whatever their confidence, ``p`` being the mix of predicted classes. Noise, blur and pixelation make
  a CIFAR model call most images "frog" or "cat" *confidently*; that is where plain ATC overestimates
  most (this project measured 67.6 % estimated for 15.4 % true), and exactly what the bound sees. It is
  the first-order term of the optimal-transport estimate (COT, Lu et al., NeurIPS 2023): transporting
  near one-hot predictions onto the label mix costs at least the total variation between the mixes.

The served estimate is ``min(ATC, class-mix bound)``; both come from counters Prometheus already has.
``cot`` here is the exact COT estimate, for the offline comparison only (it needs every probability
vector, which a live server does not keep).
"""

from __future__ import annotations

import math

import numpy as np

from common.exit_codes import TooLittleData


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def confidence(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Top probability of each row after temperature scaling (what ``postprocess`` thresholds)."""
    return softmax(logits, temperature).max(axis=1)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, low: float = 0.05, high: float = 20.0) -> float:
    """The ``T`` minimising the NLL of ``softmax(logits / T)`` (golden-section search on ``log T``).

    The NLL is convex in ``1/T``, so a 1-D search finds the optimum; 60 steps narrow ``log T`` to
    1e-12 of the bracket.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(logits) == 0 or len(logits) != len(labels):
        raise TooLittleData("a temperature needs labelled logits (none given, or counts differ)")

    def nll(log_t: float) -> float:
        z = logits / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels]))

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(math.exp((a + b) / 2))


def atc_threshold(scores: np.ndarray, correct: np.ndarray) -> float:
    """The score ``t`` with ``mean(scores > t) == mean(correct)`` on the held-out split (ATC's rule)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise TooLittleData("an ATC threshold needs held-out predictions")
    accuracy = float(np.mean(correct))
    ordered = np.sort(scores)
    wrong = round((1.0 - accuracy) * len(ordered))  # this many scores must lie at or below t
    if wrong <= 0:
        return float(np.nextafter(ordered[0], -np.inf))
    return float(ordered[wrong - 1])


def atc(scores: np.ndarray, threshold: float) -> float:
    """The ATC estimate: the share of scores above the threshold."""
    return float(np.mean(np.asarray(scores) > threshold))


def class_mix_bound(predicted_mix: np.ndarray, reference_mix: np.ndarray) -> float:
    """``sum_c min(p_c, q_c)``: the most accuracy answers with mix ``p`` can have on images of mix ``q``."""
    p = np.asarray(predicted_mix, dtype=np.float64)
    q = np.asarray(reference_mix, dtype=np.float64)
    p, q = p / p.sum(), q / q.sum()
    return float(np.minimum(p, q).sum())


def combined(atc_estimate: float, bound: float) -> float:
    """The served estimate: ATC, capped by the class-mix bound."""
    return min(atc_estimate, bound)


def cot(probabilities: np.ndarray, reference_mix: np.ndarray) -> float:
    """Confidence optimal transport (Lu et al. 2023): 1 - W(predictions, label mix), offline only.

    The cost of moving a probability vector ``p`` onto the one-hot of class ``y`` is its total
    variation ``1 - p_y``; the label side holds the reference mix. Solved exactly as an assignment of
    predictions to class slots (``scipy.optimize.linear_sum_assignment``).
    """
    from scipy.optimize import linear_sum_assignment

    probs = np.asarray(probabilities, dtype=np.float64)
    q = np.asarray(reference_mix, dtype=np.float64)
    slots = np.floor(q / q.sum() * len(probs)).astype(int)
    slots[np.argsort(-(q / q.sum() * len(probs) - slots))[: len(probs) - slots.sum()]] += 1
    columns = np.repeat(np.arange(len(q)), slots)
    cost = 1.0 - probs[:, columns]
    rows, cols = linear_sum_assignment(cost)
    return float(1.0 - cost[rows, cols].mean())


def wilson_interval(successes: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a share: what the sampling of ``n`` answers alone allows."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))
