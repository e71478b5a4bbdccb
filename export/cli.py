"""``python -m export.cli``: export a training checkpoint or outside weights, gated on parity."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from common.cli import run_cli, setup_logging
from common.fsutil import write_json
from common.params import load_params


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=Path("artifacts/train/model.safetensors"),
        help="safetensors (or .pt state dict) weights, e.g. ../shared/models/*.safetensors",
    )
    p.add_argument(
        "--data", type=Path, default=Path("data/prepared"), help="prepared data (parity + calibration)"
    )
    p.add_argument("--out", type=Path, default=Path("artifacts/export"))
    p.add_argument("--report", type=Path, default=Path("reports/export.json"), help="parity summary for DVC")
    p.add_argument("--run-file", type=Path, default=None, help="training run.json to log into")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--precisions", default=None, help="comma list overriding params.yaml export.precisions")
    p.add_argument(
        "--depth", type=int, default=None, help="expected WideResNet depth (required without metadata)"
    )
    p.add_argument(
        "--width", type=int, default=None, help="expected WideResNet width (required without metadata)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    command = "python -m export.cli " + shlex.join(argv if argv is not None else sys.argv[1:])

    def go() -> None:
        from export.stage import export_model

        params = load_params(args.params)
        cfg = params.export
        if args.precisions:
            cfg = cfg.replace(precisions=tuple(args.precisions.split(",")))
        manifest = export_model(
            args.checkpoint,
            args.data,
            params.data,
            cfg,
            args.out,
            args.run_file,
            command,
            args.depth,
            args.width,
            experiment=params.mlflow.experiment,
        )
        write_json(
            args.report,
            {
                a.precision: a.parity.model_dump(
                    include={"passed", "max_abs_logit", "top1_agreement", "accuracy", "accuracy_drop"}
                )
                | ({"test_accuracy": a.test.accuracy, "test_images": a.test.images} if a.test else {})
                for a in manifest.artifacts
            },
        )
        print(json.dumps({a.precision: a.passed for a in manifest.artifacts} | {"skipped": manifest.skipped}))

    from export.stage import ExportError
    from training.checkpoint import WeightsError

    run_cli(go, (ExportError, WeightsError, ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
