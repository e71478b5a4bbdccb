"""``cifar10-optimize``: measure every served form on this host and serve the fastest that keeps accuracy.

In the spirit of Triton Model Analyzer and Model Navigator. For every registered form with a
``production`` version (fp32, fp16, int8, a TensorRT plan where one was exported: the registry holds
only versions that passed their parity gate), it measures throughput and p50/p99 through a private
``tritonserver`` for a small grid of dynamic-batching settings and instance counts (``params.yaml``'s
``optimize`` section), then chooses the highest throughput with p99 within the budget and test accuracy
within the margin of fp32's.

The choice is recorded in the registry (:mod:`registry.serving_choice`) and reaches Triton through the
normal ``sync`` path: the repository is rewritten, and with ``--server`` the live server is rolled
over with :func:`serving.rollout.apply` (no failed request). The table, a PNG and the choice are
written under ``--out`` and logged to MLflow.

Exit codes: 0 a choice was made (and recorded unless ``--dry-run``); 1 no candidate met the
objective (nothing recorded); 3 registry unreachable; 5 nothing registered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import tempfile
from pathlib import Path

from common.cli import run_cli, setup_logging
from common.exit_codes import Failed

log = logging.getLogger("optimize")


class NoCandidate(Failed):
    """No candidate met the objective; nothing was recorded (exit code 1)."""


def payloads(images: Path | None, n: int = 64) -> list[bytes]:
    """Encoded test images (or seeded synthetic PNGs when no folder is given)."""
    from client.core import images as img

    items = img.discover(images, limit=n, seed=0) if images else img.synthetic(n, seed=0)
    return [item.read() for item in items]


def optimize(args: argparse.Namespace) -> int:
    from common.params import ALL_PRECISIONS, load_params
    from optimize import evidence
    from optimize.objective import judge
    from optimize.search import run_search
    from registry import serving_choice
    from registry.cli import sync_from_args

    params = load_params(args.params)
    if args.clear:
        touched = serving_choice.clear(params.registry, ALL_PRECISIONS)
        print(json.dumps({"cleared": touched, "sync": sync_from_args(args, params)}, indent=2))
        return 0
    cfg = params.optimize
    with tempfile.TemporaryDirectory(prefix="cifar10-optimize-") as tmp:
        rows, baseline = run_search(params, args.cache, Path(tmp), payloads(args.images), args.backend_dir)
    best = judge(rows, cfg, baseline.accuracy if baseline else None)
    settings = {
        "images_per_request": cfg.images_per_request,
        "concurrency": cfg.concurrency,
        "seconds": cfg.seconds,
        "p99_budget_ms": cfg.p99_budget_ms,
        "accuracy_margin": cfg.accuracy_margin,
    }
    files = evidence.write(rows, best, cfg.p99_budget_ms, args.out, {"settings": settings})
    print(evidence.table_text(rows, best))
    run_id = "" if args.no_mlflow else evidence.log_to_mlflow(args.experiment, files, best, settings)
    if best is None:
        raise NoCandidate(f"no candidate met the objective (see {files['json']}); nothing recorded")
    print(f"choice: {best.candidate.label} ({best.throughput_img_s} img/s, p99 {best.p99_ms} ms)")
    if args.dry_run:
        return 0
    choice = serving_choice.ServingChoice(
        precision=best.candidate.precision,
        version=best.version,
        preferred_batch_sizes=best.candidate.preferred_batch_sizes,
        max_queue_delay_us=best.candidate.max_queue_delay_us,
        instance_count=best.candidate.instance_count,
        baseline_version=baseline.version if baseline else 0,
        throughput_img_s=best.throughput_img_s,
        p99_ms=best.p99_ms or 0.0,
        chosen_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        run_id=run_id,
    )
    where = serving_choice.record(params.registry, ALL_PRECISIONS, choice)
    print(json.dumps({"recorded_on": where, "sync": sync_from_args(args, params)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--images", type=Path, help="payload images (default: seeded synthetic PNGs)")
    p.add_argument(
        "--cache", type=Path, default=Path("artifacts/registry_cache"), help="artifact download cache"
    )
    p.add_argument("--repository", type=Path, default=Path("model_repository"), help="what sync writes")
    p.add_argument("--server", help="roll this live server over (gRPC host:port) after recording")
    p.add_argument("--admin-token-file", type=Path, help="the live server's admin token")
    p.add_argument("--kind", choices=("KIND_CPU", "KIND_GPU"), help="instance kind for sync")
    p.add_argument(
        "--backend-dir",
        type=Path,
        help="Triton's own backends for the private server (NGC image: /opt/tritonserver/backends, "
        "with $CIFAR10_TRITONSERVER=/opt/tritonserver/bin/tritonserver)",
    )
    p.add_argument("--out", type=Path, default=Path("reports/optimize"))
    p.add_argument("--experiment", default="cifar10-optimize", help="MLflow experiment")
    p.add_argument("--no-mlflow", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="measure and report; record nothing")
    p.add_argument("--clear", action="store_true", help="remove the recorded choice, then sync")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    run_cli(lambda: optimize(args), expected=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
