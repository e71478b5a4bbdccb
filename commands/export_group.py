"""``cifar10 export``: trained (or outside) weights to ONNX fp32/fp16/int8 and TensorRT, gated on parity."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from commands.main import common_options, echo_json, settings

FILE = click.Path(dir_okay=False, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)


@click.command()
@common_options
@click.option(
    "--checkpoint", type=FILE, default=Path("artifacts/train/model.safetensors"), show_default=True,
    help="safetensors (or .pt state dict) weights.",
)  # fmt: skip
@click.option(
    "--data", type=FOLDER, default=Path("data/prepared"), help="prepared data (parity + calibration)."
)
@click.option("--out", type=FOLDER, default=Path("artifacts/export"), show_default=True)
@click.option("--report", type=FILE, default=Path("reports/export.json"), help="parity summary for DVC.")
@click.option("--run-file", type=FILE, default=None, help="training run.json to log into.")
@click.option("--precisions", default=None, help="comma list overriding export.precisions.")
@click.option(
    "--depth", type=int, default=None, help="expected WideResNet depth (required without metadata)."
)
@click.option(
    "--width", type=int, default=None, help="expected WideResNet width (required without metadata)."
)
def export(
    params_file: Path,
    profile: str | None,
    sets: tuple[str, ...],
    checkpoint: Path,
    data: Path,
    out: Path,
    report: Path,
    run_file: Path | None,
    precisions: str | None,
    depth: int | None,
    width: int | None,
) -> None:
    """Export weights in every configured precision; each artifact must pass its parity gate.

    \b
    Examples:
      cifar10 export
      cifar10 export --checkpoint wrn-28-10.safetensors --precisions fp32,int8
    """
    from common.fsutil import write_json
    from export.stage import export_model

    params = settings(params_file, profile, sets)
    cfg = params.export.replace(precisions=tuple(precisions.split(","))) if precisions else params.export
    command = "cifar10 " + shlex.join(sys.argv[1:])
    manifest = export_model(
        checkpoint, data, params.data, cfg, out, run_file, command, depth, width,
        experiment=params.mlflow.experiment, monitoring=params.monitoring, serving=params.serving,
    )  # fmt: skip
    keys = {"passed", "max_abs_logit", "top1_agreement", "accuracy", "accuracy_drop"}
    write_json(
        report,
        {
            a.precision: a.parity.model_dump(include=keys)
            | ({"test_accuracy": a.test.accuracy, "test_images": a.test.images} if a.test else {})
            for a in manifest.artifacts
        },
    )
    echo_json(
        {a.precision: a.passed for a in manifest.artifacts} | {"skipped": manifest.skipped}, indent=None
    )
