"""Scoring production on the candidate's test images, so that the gate compares like with like.

The candidate's accuracy was measured at export on a seeded, class-balanced part of a prepared test
split, named by its digest (:mod:`common.scored_split`). When production's own figure carries another
digest (another dataset, another count of scored images, another class list), this module finds the
candidate's rows again in the local prepared folder - the same selection, checked against the digest -
and runs production's registered artifact on them with ONNX Runtime, as the export stage scored it.

The result is kept on production's version as the tag ``test_score.<digest>`` (accuracy, images and
per-class precision as JSON), so a later gate on the same data does not score again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from common import scored_split
from registry import aliases, store, tags
from release.limits import Baseline

log = logging.getLogger(__name__)


class ProductionScorer:
    """``scorer(digest, images)`` for :func:`release.gate.offline`, for one production version."""

    def __init__(self, name: str, version: int, prepared: Path, cache: Path) -> None:
        self.name, self.version, self.prepared, self.cache = name, version, Path(prepared), Path(cache)

    def __call__(self, digest: str, images: int) -> Baseline | str:
        key = f"test_score.{digest}"
        info = aliases.resolve(self.name, version=self.version)
        cached = _parse(info.tags.get(key, ""))
        if cached is not None:
            return Baseline(*cached, basis=f"production scored earlier on the candidate's data {digest}")
        if not (self.prepared / "test_x.npy").is_file():
            return f"no prepared test split at {self.prepared} to score production on"
        model_tags = dict(store.registered_model(store.client(), self.name).tags)
        classes = tags.version_classes(info.tags, model_tags, self.name)
        x, y = scored_split.load_rows(self.prepared, images)
        if scored_split.digest(x, y, classes) != digest:
            return f"the test split at {self.prepared} is not the one the candidate was scored on"
        if tags.artifact_format(info.tags, self.name, self.version) != "onnx":
            return f"{self.name} v{self.version} is not an ONNX file, which this host could run"
        from export.onnx_io import run_onnx  # how the export stage scored the candidate
        from registry.version_fetch import fetch_artifact

        path = fetch_artifact(self.name, self.version, self.cache)
        mean = tags.json_list(model_tags, "mean", self.name, float)
        std = tags.json_list(model_tags, "std", self.name, float)
        predicted = run_onnx(path, scored_split.normalise(x, mean, std)).argmax(1)
        accuracy = float(np.mean(predicted == y))
        precision = scored_split.class_precision(predicted, y, classes)
        log.info(
            "production %s v%d scores %.4f on the candidate's %d test images",
            self.name,
            self.version,
            accuracy,
            len(y),
        )
        value = json.dumps({"accuracy": round(accuracy, 4), "images": len(y), "class_precision": precision})
        store.call_registry(
            f"recording a score on {self.name} v{self.version}",
            store.client().set_model_version_tag,
            self.name,
            str(self.version),
            key,
            value,
        )
        return Baseline(
            round(accuracy, 4), len(y), precision, f"production scored now on the candidate's data {digest}"
        )


def _parse(text: str) -> tuple[float, int, dict[str, float]] | None:
    try:
        data = json.loads(text)
        return (
            float(data["accuracy"]),
            int(data["images"]),
            {str(k): float(v) for k, v in data["class_precision"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
