"""``cifar10 train``: train a WideResNet on the prepared data, resuming from its checkpoint folder."""

from __future__ import annotations

from pathlib import Path

import click

from commands.main import common_options, echo_json, settings

FILE = click.Path(dir_okay=False, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)


@click.command()
@common_options
@click.option("--data", type=FOLDER, default=Path("data/prepared"), show_default=True)
@click.option("--model-out", type=FILE, default=Path("artifacts/train/model.safetensors"), show_default=True)
@click.option("--checkpoint-dir", type=FOLDER, default=Path("artifacts/checkpoint"), show_default=True)
@click.option("--log-csv", type=FILE, default=Path("reports/train_log.csv"), show_default=True)
@click.option("--run-file", type=FILE, default=Path("artifacts/train/run.json"), show_default=True)
@click.option(
    "--run-folder", type=FOLDER, default=Path("artifacts/train_run"), show_default=True,
    help="the run's own record (params, metrics, artifacts), kept even when MLflow is unreachable.",
)  # fmt: skip
@click.option("--no-progress", is_flag=True, help="no progress bar.")
def train(
    params_file: Path,
    profile: str | None,
    sets: tuple[str, ...],
    data: Path,
    model_out: Path,
    checkpoint_dir: Path,
    log_csv: Path,
    run_file: Path,
    run_folder: Path,
    no_progress: bool,
) -> None:
    """Train the active profile's WideResNet (an interrupted run resumes where it stopped).

    \b
    Examples:
      cifar10 train
      cifar10 train --profile gpu --set train.max_minutes=30
    """
    from training.train import train as train_model

    summary = train_model(
        settings(params_file, profile, sets), data, model_out, checkpoint_dir, log_csv, run_file,
        show_progress=not no_progress, run_folder=run_folder,
    )  # fmt: skip
    if summary:
        keys = ("run_id", "run_folder", "profile", "final", "train_seconds", "mean_images_per_s")
        echo_json({k: summary.get(k) for k in keys}, indent=None)
