"""The ``evaluate`` stage: test-split quality of trained weights, recorded for DVC and MLflow."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from common.fsutil import atomic_path, write_json
from common.metrics import ClassScores, classification_summary, confusion_title, plot_confusion
from common.params import DataConfig
from training.checkpoint import load_model
from training.engine import predict_logits

log = logging.getLogger(__name__)


class TestMetrics(TypedDict, total=False):
    """``reports/metrics.json``: DVC's metrics of the evaluate stage (``accuracy_tta_flip`` with TTA)."""

    accuracy: float
    accuracy_plain: float
    accuracy_tta_flip: float
    tested_samples: int
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, ClassScores]


def evaluate_weights(
    weights: Path,
    images: np.ndarray,
    labels: np.ndarray,
    data: DataConfig,
    batch_size: int,
    tta_flip: bool,
    device: torch.device | None = None,
) -> tuple[dict, np.ndarray]:
    """Summary metrics (plain and, if asked, flip-TTA accuracy) and the predictions used for them."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(weights, num_classes=len(data.classes)).to(device)
    logits = predict_logits(model, images, data, device, batch_size)
    pred = logits.argmax(1)
    summary = classification_summary(labels, pred, list(data.classes))
    summary["accuracy_plain"] = summary["accuracy"]
    if tta_flip:
        tta = logits + predict_logits(model, images[:, :, ::-1, :], data, device, batch_size)
        pred = tta.argmax(1)
        summary = classification_summary(labels, pred, list(data.classes)) | {
            "accuracy_plain": summary["accuracy"],
            "accuracy_tta_flip": float(np.mean(pred == labels)),
        }
    return summary, pred


def evaluate(
    weights: Path,
    prepared: Path,
    data: DataConfig,
    metrics_out: Path,
    confusion_png: Path,
    predictions_csv: Path,
    run_file: Path | None,
    tta_flip: bool,
    batch_size: int,
) -> TestMetrics:
    """Evaluate on the test split, write DVC metrics/plots, and log them to the training run."""
    x, y = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    summary, pred = evaluate_weights(weights, x, y, data, batch_size, tta_flip)
    metrics: TestMetrics = {  # type: ignore[assignment]
        k: summary[k]
        for k in (
            "accuracy",
            "accuracy_plain",
            "tested_samples",
            "macro_precision",
            "macro_recall",
            "macro_f1",
        )
    }
    if "accuracy_tta_flip" in summary:
        metrics["accuracy_tta_flip"] = summary["accuracy_tta_flip"]
    metrics["per_class"] = summary["per_class"]
    write_json(metrics_out, metrics)
    label = "test, flip TTA" if tta_flip else "test"
    with atomic_path(confusion_png) as tmp:
        plot_confusion(summary["confusion_matrix"], list(data.classes), tmp, confusion_title(summary, label))
    with atomic_path(predictions_csv) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["actual", "predicted"])
        writer.writerows((data.classes[a], data.classes[p]) for a, p in zip(y, pred, strict=True))
    if run_file is not None and run_file.exists():
        _log_to_run(
            prepared,
            json.loads(run_file.read_text())["run_id"],
            metrics,
            summary,
            [metrics_out, confusion_png, predictions_csv],
        )
    return metrics


def _log_to_run(prepared: Path, run_id: str, metrics: dict, summary: dict, files: list[Path]) -> None:
    import mlflow

    from common import lineage, tracking

    tracking.configure()
    with mlflow.start_run(run_id=run_id):
        lineage.log_splits(prepared, {"test": "testing"})  # the export logs it with the same digest
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if isinstance(v, float | int)})
        for name, row in summary["per_class"].items():
            mlflow.log_metrics(
                {
                    f"test_f1_{name}": row["f1"],
                    f"test_recall_{name}": row["recall"],
                    f"test_precision_{name}": row["precision"],
                }
            )
        for f in files:
            mlflow.log_artifact(str(f), "evaluation")
