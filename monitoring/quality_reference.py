"""The quality reference of one exported form: what "normal" looked like on held-out images.

Written by the export stage for every artifact that passes its gate (``quality/<precision>.json``),
registered with the version (``quality_reference.json`` beside the model file, its SHA-256 in the
version's tags) and shipped by ``sync`` into the version's folder of the Triton repository. The
served ``postprocess`` thresholds with *this version's* temperature and threshold, ``preprocess``
bins input statistics with *its* edges: a version never uses another version's reference.

It holds:

* the held-out split it was calibrated on (``validation``, or ``test`` for weights that trained on
  the validation images) and how many images;
* the accuracy there, the fitted temperature and the ATC threshold (:mod:`monitoring.accuracy_estimate`);
* the confidence histogram (calibrated top probability, 20 equal bins) - for the dashboard and to
  see what a threshold means;
* the label mix of the split (what the class-mix bound compares with) and the predicted class mix;
* for each input statistic (:mod:`serving.triton.python_models.input_statistics`), quantile bin edges
  and the reference share of each bin, measured on the test split's *files* decoded the way the
  server decodes them: the statistics describe the images as clients send them (encoding included),
  and need no labels, so any held-out files will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.exit_codes import UsageError
from common.export_manifest import QUALITY_REFERENCE_FILE
from monitoring import accuracy_estimate as est
from serving.triton.python_models.input_statistics import STATISTICS, bin_edges, histogram

FORMAT_VERSION = 1
FILE_NAME = QUALITY_REFERENCE_FILE
CONFIDENCE_BINS = 20


class BadQualityReference(UsageError):
    """A quality reference file that cannot be read or is inconsistent (exit code 2)."""


class StatisticReference(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    edges: list[float]
    ratios: list[float]  # reference share of each of the len(edges) + 1 bins

    @model_validator(mode="after")
    def _shape(self) -> StatisticReference:
        if len(self.ratios) != len(self.edges) + 1 or abs(sum(self.ratios) - 1) > 1e-6:
            raise ValueError("ratios must be len(edges) + 1 shares summing to 1")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must increase")
        return self


class QualityReference(BaseModel):
    """One form's reference; ``format_version`` lets a later reader refuse what it cannot read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: Literal[1] = FORMAT_VERSION
    precision: str
    split: Literal["validation", "test"]
    images: int = Field(ge=1)
    accuracy: float = Field(ge=0, le=1)
    temperature: float = Field(gt=0)
    threshold: float
    mean_confidence: float = Field(ge=0, le=1)
    classes: list[str] = Field(min_length=2)
    label_ratios: list[float]
    predicted_ratios: list[float]
    confidence_counts: list[int] = Field(min_length=CONFIDENCE_BINS, max_length=CONFIDENCE_BINS)
    statistics_images: int = Field(ge=1)
    statistics: dict[str, StatisticReference]

    @model_validator(mode="after")
    def _consistent(self) -> QualityReference:
        k = len(self.classes)
        if len(self.label_ratios) != k or len(self.predicted_ratios) != k:
            raise ValueError(f"label_ratios and predicted_ratios need one share per class ({k})")
        if sorted(self.statistics) != sorted(STATISTICS):
            raise ValueError(f"statistics must be exactly {list(STATISTICS)}")
        return self

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> QualityReference:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except FileNotFoundError:
            raise BadQualityReference(f"quality reference not found: {path}") from None
        except ValueError as exc:
            first = str(exc).splitlines()
            raise BadQualityReference(f"{path}: not a quality reference: {' '.join(first[:3])}") from None


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c) / total, 6) for c in counts] if total else [0.0] * len(counts)


def statistic_references(values: np.ndarray, bins: int) -> dict[str, StatisticReference]:
    """Quantile edges and shares per statistic from ``N x len(STATISTICS)`` measured values."""
    out = {}
    for i, name in enumerate(STATISTICS):
        edges = bin_edges(values[:, i], bins)
        counts = np.asarray(histogram(values[:, i], edges), dtype=np.float64)
        shares = counts / counts.sum()
        out[name] = StatisticReference(edges=edges, ratios=[float(s) for s in shares])
    return out


def build_reference(
    precision: str,
    logits: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    split: Literal["validation", "test"],
    statistics: np.ndarray,
    bins: int,
) -> QualityReference:
    """The reference of one form from its logits on the held-out split and the measured statistics."""
    if len(logits) != len(labels) or len(logits) == 0:
        raise BadQualityReference(f"{precision}: a reference needs labelled logits ({len(logits)} given)")
    correct = logits.argmax(1) == labels
    temperature = est.fit_temperature(logits, labels)
    conf = est.confidence(logits, temperature)
    k = len(classes)
    return QualityReference(
        precision=precision,
        split=split,
        images=len(labels),
        accuracy=float(correct.mean()),
        temperature=round(temperature, 6),
        threshold=est.atc_threshold(conf, correct),
        mean_confidence=float(conf.mean()),
        classes=list(classes),
        label_ratios=_shares(np.bincount(labels, minlength=k)),
        predicted_ratios=_shares(np.bincount(logits.argmax(1), minlength=k)),
        confidence_counts=np.histogram(conf, bins=CONFIDENCE_BINS, range=(0.0, 1.0))[0].astype(int).tolist(),
        statistics_images=len(statistics),
        statistics=statistic_references(statistics, bins),
    )
