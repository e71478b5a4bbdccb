"""Thin command-line wrappers around the pipeline stages; ``dvc.yaml`` passes every path in."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.cli import run_cli, setup_logging
from common.params import load_params


def _parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--profile", default=None, help="override params.yaml's profile key")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def prepare_main(argv: list[str] | None = None) -> None:
    p = _parser("Prepare CIFAR-10: arrays, stratified validation split and a test image folder.")
    p.add_argument("--out", type=Path, default=Path("data/prepared"))
    p.add_argument("--cache", type=Path, default=Path("data/raw"), help="where the official archive is kept")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def go() -> None:
        from training.prepare import prepare

        data = load_params(args.params, args.profile).data
        meta = prepare(data.replace(source=data.resolved_source()), args.out, args.cache)
        print(json.dumps({k: meta[k] for k in ("source", "counts")}))

    from training.sources import DataError

    run_cli(go, (DataError, ValueError, FileNotFoundError))


def train_main(argv: list[str] | None = None) -> None:
    p = _parser("Train a WideResNet on the prepared data (resumes from the checkpoint folder).")
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.add_argument("--model-out", type=Path, default=Path("artifacts/train/model.safetensors"))
    p.add_argument("--checkpoint-dir", type=Path, default=Path("artifacts/checkpoint"))
    p.add_argument("--log-csv", type=Path, default=Path("reports/train_log.csv"))
    p.add_argument("--run-file", type=Path, default=Path("artifacts/train/run.json"))
    p.add_argument(
        "--run-folder",
        type=Path,
        default=Path("artifacts/train_run"),
        help="the run's own record (params, metrics, artifacts), kept even when MLflow is unreachable",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def go() -> None:
        from training.train import train

        summary = train(
            load_params(args.params, args.profile),
            args.data,
            args.model_out,
            args.checkpoint_dir,
            args.log_csv,
            args.run_file,
            show_progress=not args.no_progress,
            run_folder=args.run_folder,
        )
        if summary:
            keys = ("run_id", "run_folder", "profile", "final", "train_seconds", "mean_images_per_s")
            print(json.dumps({k: summary.get(k) for k in keys}))

    run_cli(go, (ValueError, FileNotFoundError, FloatingPointError))


def evaluate_main(argv: list[str] | None = None) -> None:
    p = _parser("Evaluate weights on the test split: metrics JSON, confusion matrix, predictions CSV.")
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.add_argument("--weights", type=Path, default=Path("artifacts/train/model.safetensors"))
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    p.add_argument("--confusion", type=Path, default=Path("reports/confusion_matrix.png"))
    p.add_argument("--predictions", type=Path, default=Path("reports/test_predictions.csv"))
    p.add_argument(
        "--run-file",
        type=Path,
        default=Path("artifacts/train/run.json"),
        help="training run to log into (skipped if the file does not exist)",
    )
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def go() -> None:
        from training.evaluate import evaluate

        params = load_params(args.params, args.profile)
        metrics = evaluate(
            args.weights,
            args.data,
            params.data,
            args.metrics,
            args.confusion,
            args.predictions,
            args.run_file,
            params.evaluate.tta_flip,
            params.train.eval_batch_size,
        )
        print(json.dumps({k: v for k, v in metrics.items() if k != "per_class"}))

    run_cli(go, (ValueError, FileNotFoundError))


def main() -> None:
    commands = {"prepare": prepare_main, "train": train_main, "evaluate": evaluate_main}
    import sys

    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m training.cli {{{','.join(commands)}}} [options]", file=sys.stderr)
        sys.exit(2)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
