"""``cifar10 evaluate``: weights on the test split; metrics JSON, confusion matrix, predictions CSV."""

from __future__ import annotations

from pathlib import Path

import click

from commands.main import common_options, echo_json, settings

FILE = click.Path(dir_okay=False, path_type=Path)


@click.command()
@common_options
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=Path("data/prepared"))
@click.option("--weights", type=FILE, default=Path("artifacts/train/model.safetensors"), show_default=True)
@click.option("--metrics", type=FILE, default=Path("reports/metrics.json"), show_default=True)
@click.option("--confusion", type=FILE, default=Path("reports/confusion_matrix.png"), show_default=True)
@click.option("--predictions", type=FILE, default=Path("reports/test_predictions.csv"), show_default=True)
@click.option(
    "--run-file", type=FILE, default=Path("artifacts/train/run.json"), show_default=True,
    help="training run to log into (skipped if the file does not exist).",
)  # fmt: skip
def evaluate(
    params_file: Path,
    profile: str | None,
    sets: tuple[str, ...],
    data: Path,
    weights: Path,
    metrics: Path,
    confusion: Path,
    predictions: Path,
    run_file: Path,
) -> None:
    """Evaluate weights on the test split (evaluate.tta_flip adds the flipped view)."""
    from training.evaluate import evaluate as evaluate_weights

    params = settings(params_file, profile, sets)
    figures = evaluate_weights(
        weights, data, params.data, metrics, confusion, predictions, run_file,
        params.evaluate.tta_flip, params.train.eval_batch_size,
    )  # fmt: skip
    echo_json({k: v for k, v in figures.items() if k != "per_class"}, indent=None)
