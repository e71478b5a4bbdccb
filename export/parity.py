"""The parity gate: an exported artifact is usable only if it agrees with PyTorch on real images."""

from __future__ import annotations

import io

import numpy as np

from common.export_manifest import Parity as ParityResult  # the manifest's record: one field list
from common.params import Tolerance


def compare(
    precision: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, tol: Tolerance
) -> ParityResult:
    """Check ``candidate`` logits against PyTorch's ``reference`` logits under ``tol``.

    NaN or Inf anywhere fails regardless of the tolerances, since such a model would answer with
    garbage that top-1 agreement alone might not reveal.
    """
    if reference.shape != candidate.shape:
        raise ValueError(
            f"{precision}: logits shape {candidate.shape} differs from PyTorch's {reference.shape}"
        )
    finite = bool(np.isfinite(candidate).all())
    diff = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    ref_pred, cand_pred = reference.argmax(1), candidate.argmax(1)
    acc_ref, acc = float(np.mean(ref_pred == labels)), float(np.mean(cand_pred == labels))
    max_abs = float(np.nanmax(diff)) if finite else float("inf")
    agreement, drop = float(np.mean(ref_pred == cand_pred)), acc_ref - acc
    failures = [] if finite else ["NaN or Inf in the outputs"]
    if tol.max_abs_logit is not None and max_abs > tol.max_abs_logit:
        failures.append(f"max |Δlogit| {max_abs:.2e} > {tol.max_abs_logit:.0e}")
    if tol.min_agreement is not None and agreement < tol.min_agreement:
        failures.append(f"top-1 agreement {agreement:.2%} < {tol.min_agreement:.2%}")
    if tol.max_accuracy_drop is not None and drop > tol.max_accuracy_drop:
        failures.append(f"accuracy drop {drop * 100:.2f} points > {tol.max_accuracy_drop * 100:.2f}")
    return ParityResult(
        precision=precision,
        images=len(labels),
        max_abs_logit=max_abs,
        mean_abs_logit=float(np.nanmean(diff)) if finite else float("inf"),
        top1_agreement=agreement,
        accuracy_pytorch=acc_ref,
        accuracy=acc,
        accuracy_drop=drop,
        finite=finite,
        passed=not failures,
        failures=failures,
    )


def render_table(results: list[ParityResult], title: str = "parity against PyTorch") -> str:
    """A fixed-width table for terminals, logs and the MLflow artifact."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("artifact", "images", "max |Δ|", "mean |Δ|", "top-1 agree", "acc PyTorch", "acc", "verdict"):
        table.add_column(col, justify="right" if col not in {"artifact", "verdict"} else "left")
    for r in results:
        table.add_row(
            r.precision,
            str(r.images),
            f"{r.max_abs_logit:.2e}",
            f"{r.mean_abs_logit:.2e}",
            f"{r.top1_agreement:.2%}",
            f"{r.accuracy_pytorch:.2%}",
            f"{r.accuracy:.2%}",
            "PASS" if r.passed else "FAIL: " + "; ".join(r.failures),
        )
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()
