"""Classification metrics and the confusion-matrix figure, shared by offline evaluation everywhere.

Kept free of torch so the client (installed without it) reports exactly what the pipeline reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

import numpy as np


class ClassScores(TypedDict):
    precision: float
    recall: float
    f1: float
    support: int


class ClassificationSummary(TypedDict):
    """What :func:`classification_summary` returns (and DVC's ``metrics.json`` is cut from)."""

    accuracy: float
    tested_samples: int
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]


def classification_summary(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]
) -> ClassificationSummary:
    """Accuracy, per-class precision/recall/F1/support, macro averages and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0,
        "tested_samples": len(y_true),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def plot_confusion(matrix: np.ndarray | list, classes: list[str], path: Path, title: str) -> Path:
    """Write a confusion-matrix PNG (rows: true class, columns: predicted) with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=100)
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if cm[i, j] > threshold else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def confusion_title(summary: dict[str, Any], label: str = "") -> str:
    prefix = f"{label}: " if label else ""
    return f"{prefix}accuracy {summary['accuracy'] * 100:.2f}% (n={summary['tested_samples']})"
