"""Thin CLI: ``python -m client.cli batch|offline-eval|confusion|bench``; see ``--help`` of each.

Arguments become the dataclass configs of :mod:`client.jobs.folder_batch`,
:mod:`client.jobs.offline_eval` and :mod:`client.tools.load_bench`; every expected failure becomes
one ``error: ...`` line and an exit code from the project-wide table (:mod:`common.exit_codes`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from client.core.errors import EXIT_CODES_HELP
from client.core.request_loop import DEFAULT_REQUEST_BATCH
from common import exit_codes
from monitoring import drift_cli as drift

ENV_HTTP, ENV_GRPC, ENV_METRICS = "TRITON_HTTP_URL", "TRITON_GRPC_URL", "TRITON_METRICS_URL"


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choices(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(x.strip() for x in text.split(",") if x.strip())
        bad = [v for v in values if v not in allowed]
        if not values or bad:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}, got {text!r}")
        return values

    return parse


def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    conn = argparse.ArgumentParser(add_help=False)
    g = conn.add_argument_group("server")
    g.add_argument(
        "--url",
        default=os.environ.get(ENV_HTTP, "localhost:8000"),
        help=f"HTTP endpoint host:port (env {ENV_HTTP}; default %(default)s)",
    )
    g.add_argument(
        "--grpc-url",
        default=os.environ.get(ENV_GRPC, "localhost:8001"),
        help=f"gRPC endpoint host:port (env {ENV_GRPC}; default %(default)s)",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the server to answer before giving up with exit code 3",
    )
    g.add_argument("--request-timeout", type=float, default=30.0, help="seconds one request may take")
    g.add_argument("-v", "--verbose", action="store_true")

    run = argparse.ArgumentParser(add_help=False)
    r = run.add_argument_group("requests")
    r.add_argument("--protocol", choices=("http", "grpc"), default="http")
    r.add_argument(
        "--mode",
        choices=("bytes", "tensor"),
        default="bytes",
        help="bytes: encoded files through the ensemble; tensor: preprocess here, send to a classifier",
    )
    r.add_argument(
        "--concurrency", "-c", type=int, default=8, help="requests in flight (default %(default)s)"
    )
    r.add_argument(
        "--retry-deadline",
        type=float,
        default=60.0,
        help="retry transient failures (restart, timeout, 503/UNAVAILABLE) for this many seconds per image",
    )
    r.add_argument("--max-rps", type=float, default=None, help="cap on request starts per second")
    r.add_argument(
        "--request-batch",
        type=int,
        default=DEFAULT_REQUEST_BATCH,
        help="images per request, up to the model's max_batch_size (default %(default)s); a request that "
        "one bad image fails is retried image by image, so only that image is reported as failed",
    )
    r.add_argument(
        "--metrics-url",
        default=os.environ.get(ENV_METRICS, "http://localhost:8002/metrics"),
        help="Prometheus endpoint snapshotted before and after ('' to skip)",
    )
    r.add_argument(
        "--top-k", type=int, default=3, help="classes kept per prediction (bytes: Triton's class_count)"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    return conn, run


def build_parser() -> argparse.ArgumentParser:
    conn, run = _parents()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m client.cli",
        description="CIFAR-10 Triton client: batch inference, offline evaluation, benchmarks.",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser(
        "batch",
        parents=[conn, run],
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
        help="classify a folder or N random images; summary.json + predictions.csv",
    )
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, help="<root>/<class>/* (labelled) or a flat folder (unlabelled)")
    src.add_argument("--random", type=int, metavar="N", help="N synthetic random-noise images (seeded)")
    b.add_argument("--limit", type=int, help="a seeded random sample of this many files from --images")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--model", help="model to call (default: cifar10 for bytes, wrn_fp32 for tensor)")
    b.add_argument(
        "--model-version", default="", help="explicit model version (default: the server's choice)"
    )
    b.add_argument(
        "--out", type=Path, default=Path("reports/batch"), help="output folder (default %(default)s)"
    )

    e = sub.add_parser(
        "offline-eval",
        parents=[conn, run],
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
        help="evaluate the registry's version on a labelled folder; refuses a version mismatch",
    )
    e.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    e.add_argument("--per-class", type=int, help="first N images of each class")
    e.add_argument(
        "--precision",
        default=None,
        help="registered form: fp32, int8, ... (default: the form the ensemble routes to; "
        "fp32 with --mode tensor)",
    )
    e.add_argument("--alias", default="production", help="registry alias to evaluate (default %(default)s)")
    e.add_argument("--version", type=int, help="evaluate this registry version instead of the alias")
    e.add_argument(
        "--allow-newest", action="store_true", help="accept the newest version if the alias is unset"
    )
    e.add_argument("--ensemble", default="cifar10", help="ensemble name for --mode bytes")
    e.add_argument("--params", type=Path, default=Path("params.yaml"), help="for the registry naming scheme")
    e.add_argument("--experiment", default="cifar10-offline-eval", help="MLflow experiment")
    e.add_argument("--no-mlflow", action="store_true", help="write the files only")
    e.add_argument("--samples", type=int, default=10, help="examples in sample_predictions.json")
    e.add_argument("--out", type=Path, default=Path("reports/offline_eval"))

    c = sub.add_parser(
        "confusion",
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
        help="confusion-matrix PNG from any predictions.csv, optionally logged to an MLflow run",
    )
    c.add_argument("--csv", type=Path, required=True)
    c.add_argument("--out", type=Path, help="PNG path (default: confusion_matrix.png beside the CSV)")
    c.add_argument("--mlflow-run-id", help="attach the PNG to this MLflow run")
    c.add_argument("--title", default="", help="prefix of the figure title")
    c.add_argument("-v", "--verbose", action="store_true")

    k = sub.add_parser(
        "bench",
        parents=[conn],
        epilog=EXIT_CODES_HELP,
        formatter_class=fmt,
        help="throughput/latency sweep over concurrency; bench.json + bench.png",
    )
    k.add_argument("--protocols", type=_choices(("http", "grpc")), default=("http", "grpc"))
    k.add_argument("--modes", type=_choices(("bytes", "tensor")), default=("bytes", "tensor"))
    k.add_argument("--concurrency", type=_ints, default=(1, 2, 4, 8, 16), help="levels, e.g. 1,2,4,8,16")
    k.add_argument("--duration", type=float, default=5.0, help="seconds per level (default %(default)s)")
    k.add_argument("--requests", type=int, help="requests per level instead of --duration")
    k.add_argument("--warmup", type=float, default=1.0, help="seconds of discarded warm-up per level")
    k.add_argument("--ensemble", default="cifar10")
    k.add_argument("--classifier", default="wrn_fp32")
    k.add_argument("--classifier-version", default="")
    k.add_argument("--images", type=Path, help="payload images (default: synthetic)")
    k.add_argument("--payloads", type=int, default=64, help="distinct images cycled through")
    k.add_argument(
        "--self-test",
        action="store_true",
        help="also measure the generator's own capacity against an instant stub server",
    )
    k.add_argument(
        "--self-test-only", action="store_true", help="only the stub measurement; no server needed"
    )
    k.add_argument("--self-test-duration", type=float, default=2.0, help="seconds per level against the stub")
    k.add_argument("--out", type=Path, default=Path("reports/bench"))

    drift.add_parser(sub)
    return parser


def _endpoint(args: argparse.Namespace):
    from client.core.transport import Endpoint

    return Endpoint(args.protocol, args.url, args.grpc_url, args.request_timeout)


def _batch_config(args: argparse.Namespace, **over):
    from client.core.request_loop import RetryPolicy
    from client.jobs.folder_batch import BatchConfig

    return BatchConfig(
        endpoint=_endpoint(args),
        mode=args.mode,
        concurrency=args.concurrency,
        retry=RetryPolicy(deadline_s=args.retry_deadline),
        connect_timeout_s=args.timeout,
        metrics_url=args.metrics_url or None,
        top_k=args.top_k,
        max_rps=args.max_rps,
        progress=not args.no_progress,
        request_batch=args.request_batch,
        **over,
    )


def cmd_batch(args: argparse.Namespace) -> int:
    from client.core import images
    from client.jobs.folder_batch import run_batch, write_outputs

    items = (
        images.synthetic(args.random, args.seed)
        if args.random is not None
        else images.discover(args.images, limit=args.limit, seed=args.seed)
    )
    result = run_batch(items, _batch_config(args, model=args.model, model_version=args.model_version))
    source = str(args.images) if args.random is None else f"random:{args.random} (seed {args.seed})"
    result.summary = {"source": source, **result.summary}
    write_outputs(result, args.out)
    s = result.summary
    n, lat = s["counts"], s["latency_ms"]
    print(
        f"{n['total']} images: {n['ok']} ok, {n['error']} error, {n['skipped']} skipped; "
        f"{s['throughput_img_per_s']} img/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms -> {args.out}"
    )
    return exit_codes.FAILED if n["error"] else exit_codes.OK


def cmd_offline_eval(args: argparse.Namespace) -> int:
    from client.jobs.offline_eval import EvalConfig, offline_eval

    cfg = EvalConfig(
        images=args.images,
        out_dir=args.out,
        batch=_batch_config(args),
        precision=args.precision,
        alias=args.alias,
        version=args.version,
        allow_newest=args.allow_newest,
        per_class=args.per_class,
        ensemble=args.ensemble,
        params=args.params,
        experiment=args.experiment,
        samples=args.samples,
        mlflow=not args.no_mlflow,
    )
    m = offline_eval(cfg)
    print(
        f"{m['registered_model']} v{m['model_version']}: accuracy {m['accuracy'] * 100:.2f}% on "
        f"{m['tested_samples']} images ({m['failed_samples']} failed, {m['skipped_samples']} skipped) "
        f"-> {args.out}" + (f", MLflow run {m['mlflow_run_id']}" if m.get("mlflow_run_id") else "")
    )
    return exit_codes.FAILED if m["failed_samples"] else exit_codes.OK


def cmd_confusion(args: argparse.Namespace) -> int:
    from client.jobs.offline_eval import confusion_from_csv

    out = args.out or args.csv.with_name("confusion_matrix.png")
    s = confusion_from_csv(args.csv, out, run_id=args.mlflow_run_id, label=args.title)
    print(f"accuracy {s['accuracy'] * 100:.2f}% (n={s['tested_samples']}) -> {out}")
    return exit_codes.OK


def cmd_bench(args: argparse.Namespace) -> int:
    from client.tools.load_bench import BenchConfig, run_bench

    cfg = BenchConfig(
        http_url=args.url,
        grpc_url=args.grpc_url,
        protocols=args.protocols,
        modes=args.modes,
        concurrency=args.concurrency,
        duration_s=args.duration,
        requests=args.requests,
        warmup_s=args.warmup,
        ensemble=args.ensemble,
        classifier=args.classifier,
        classifier_version=args.classifier_version,
        images=args.images,
        payloads=args.payloads,
        request_timeout_s=args.request_timeout,
        connect_timeout_s=args.timeout,
        self_test=args.self_test,
        self_test_only=args.self_test_only,
        self_test_duration_s=args.self_test_duration,
    )
    report = run_bench(cfg, args.out)
    for r in report["results"] or report["self_test"]:
        print(
            f"{r['target']:6} {r['protocol']:4} {r['mode']:6} c={r['concurrency']:<3} "
            f"{r['throughput_rps']:9.1f} req/s  p50 {r['latency_ms']['p50']} ms  "
            f"p99 {r['latency_ms']['p99']} ms"
        )
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"-> {args.out / 'bench.json'}, {args.out / 'bench.png'}")
    failed = any(r["errors"] for r in report["results"])
    return exit_codes.FAILED if failed else exit_codes.OK


COMMANDS = {
    "batch": cmd_batch,
    "offline-eval": cmd_offline_eval,
    "confusion": cmd_confusion,
    "bench": cmd_bench,
    "drift": drift.run,
}


def main(argv: list[str] | None = None) -> None:
    from common.cli import run_cli, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))

    run_cli(lambda: COMMANDS[args.command](args), expected=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
