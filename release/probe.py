"""A labelled probe on the live server: both versions answer the same held-out test images.

The shadow figures are label-free, and so they can only catch what a candidate the gate would pass
could never do: disagree beyond the worst-case bounds of :mod:`release.limits`. A candidate a few
points worse whose extra errors stay within those bounds (the bias of one class, say: 93.1 -> 90.0 %
with 94 % agreement) is invisible to them. ``--force`` skips the offline accuracy check, which trusts
the candidate's own tags; this check does not trust them: at the start of the shadow step the
controller sends ``release.probe_images`` labelled test images from the local prepared data
(``--prepared``) to the loaded candidate *and* to production, version by version, on the live server,
and compares the two accuracies on the very same images.

The figure is the paired difference ``d = acc(candidate) - acc(production)`` over the probe's images.
It breaches when its upper ``confidence_z`` bound lies below ``-accuracy_margin`` - the gate's own
requirement, measured live - and is within otherwise: it is measured once, so waiting cannot settle a
point estimate a little below the limit, and a good candidate a few images behind by chance (a
retrained one differs from production on several per cent of the images) must not be left pending
until the step gives up. Its standard error is
the paired one, ``sqrt(var(right_c - right_p) / n)``: only images on which the two differ contribute,
so a candidate that disagrees on few images is judged precisely from few of them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import scored_split
from release.figures import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One served classifier version as the probe calls it."""

    model: str
    version: int
    input_name: str
    output_name: str
    max_batch: int


@dataclass(frozen=True)
class ProbeResult:
    images: int
    production_accuracy: float
    candidate_accuracy: float
    difference: float
    upper: float  # the difference's upper confidence bound

    def figure(self, margin: float) -> Figure:
        detail = (
            f"candidate {self.candidate_accuracy:.4f} vs production {self.production_accuracy:.4f} "
            f"on the same {self.images} labelled test images, through the live server"
        )
        return Figure(
            "probe_accuracy_difference",
            self.difference,
            -margin,
            breached=self.upper < -margin,
            within=self.upper >= -margin,
            detail=detail,
        )


def paired_bound(production_right: np.ndarray, candidate_right: np.ndarray, z: float) -> tuple[float, float]:
    """The mean paired difference (candidate - production) and its upper ``z`` bound."""
    d = candidate_right.astype(np.float64) - production_right.astype(np.float64)
    n = len(d)
    mean = float(d.mean()) if n else 0.0
    spread = float(d.var(ddof=1)) if n > 1 else 1.0
    # a sample with no disagreement still leaves doubt of about one image in n
    se = math.sqrt(max(spread, 1.0 / max(n, 1)) / max(n, 1))
    return mean, mean + z * se


def probe_rows(prepared: Path, classes: tuple[str, ...], n: int) -> tuple[np.ndarray, np.ndarray] | str:
    """``n`` class-balanced labelled test images of the prepared data, or why there are none."""
    import json

    meta = prepared / "meta.json"
    if not meta.is_file():
        return f"no prepared data at {prepared}"
    theirs = tuple(json.loads(meta.read_text()).get("classes", ()))
    if theirs != tuple(classes):
        return f"the prepared data at {prepared} has classes {list(theirs)}, production {list(classes)}"
    if 0 < n < len(classes):
        return f"release.probe_images {n} is fewer than the {len(classes)} classes (class-balanced rows)"
    images, labels = scored_split.load_rows(prepared, n)
    return (images, labels) if len(labels) else "the prepared test split is empty"


def answers(url: str, target: Target, x: np.ndarray) -> np.ndarray:
    """Top-1 of ``target`` for every row of ``x``, in batches it accepts."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url.removeprefix("grpc://"))
    out = []
    try:
        step = max(1, min(32, target.max_batch))
        for i in range(0, len(x), step):
            batch = np.ascontiguousarray(x[i : i + step])
            inp = grpcclient.InferInput(target.input_name, list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch)
            result = client.infer(target.model, [inp], model_version=str(target.version), client_timeout=300)
            out.append(result.as_numpy(target.output_name).argmax(1))
    finally:
        client.close()
    return np.concatenate(out)


def compare(production_right: np.ndarray, candidate_right: np.ndarray, z: float) -> ProbeResult:
    """Both versions' hits on the same images -> the paired difference and its bound."""
    difference, upper = paired_bound(production_right, candidate_right, z)
    result = ProbeResult(
        len(production_right),
        float(production_right.mean()),
        float(candidate_right.mean()),
        difference,
        upper,
    )
    log.info("probe: %s", result.figure(0.0).detail)
    return result
