"""``cifar10 client batch|offline-eval|confusion|bench|drift``: the Triton client's commands.

Options become the dataclass configs of :mod:`client.jobs.folder_batch`,
:mod:`client.jobs.offline_eval` and :mod:`client.tools.load_bench`; ``drift`` is the command object
of ``cifar10 monitor drift``. Every expected failure is one ``error: ...`` line and an exit code
from the project-wide table (:mod:`common.exit_codes`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from commands.client_options import (
    EPILOG,
    ChoiceList,
    IntList,
    RequestOptions,
    ServerConnection,
    request_options,
    server_options,
)
from commands.drift_command import drift
from commands.main import PARAMS, VERBOSE
from common import exit_codes

PATH = click.Path(path_type=Path)


@click.group(epilog=EPILOG)
def client() -> None:
    """CIFAR-10 Triton client: batch inference, offline evaluation, benchmarks."""


@client.command(epilog=EPILOG, short_help="Classify a folder or N random images.")
@click.option("--images", type=PATH, help="<root>/<class>/* (labelled) or a flat folder (unlabelled)")
@click.option("--random", type=int, metavar="N", help="N synthetic random-noise images (seeded)")
@click.option("--limit", type=int, help="a seeded random sample of this many files from --images")
@click.option("--seed", type=int, default=0)
@click.option("--model", help="model to call (default: cifar10 for bytes, wrn_fp32 for tensor)")
@click.option("--model-version", default="", help="explicit model version (default: the server's choice)")
@click.option("--out", type=PATH, default=Path("reports/batch"), help="output folder (default reports/batch)")
@server_options
@request_options
def batch(
    images: Path | None, random: int | None, limit: int | None, seed: int, model: str | None,
    model_version: str, out: Path, server: ServerConnection, sending: RequestOptions,
) -> None:  # fmt: skip
    """Classify a folder or N random images; summary.json + predictions.csv.

    Exactly one of --images and --random.
    """
    from client.core import images as image_source
    from client.jobs.folder_batch import run_batch, write_outputs

    if (images is None) == (random is None):
        raise click.UsageError("give exactly one of --images and --random")
    items = (
        image_source.synthetic(random, seed)
        if random is not None
        else image_source.discover(images, limit=limit, seed=seed)
    )
    result = run_batch(items, sending.batch_config(server, model=model, model_version=model_version))
    source = str(images) if random is None else f"random:{random} (seed {seed})"
    result.summary = {"source": source, **result.summary}
    write_outputs(result, out)
    s = result.summary
    n, lat = s["counts"], s["latency_ms"]
    click.echo(
        f"{n['total']} images: {n['ok']} ok, {n['error']} error, {n['skipped']} skipped; "
        f"{s['throughput_img_per_s']} img/s, p50 {lat['p50']} ms, p99 {lat['p99']} ms -> {out}"
    )
    sys.exit(exit_codes.FAILED if n["error"] else exit_codes.OK)


@client.command(
    "offline-eval", epilog=EPILOG, short_help="Evaluate the registry's version on a labelled folder."
)
@click.option("--images", type=PATH, default=Path("data/prepared/test_images"))
@click.option("--per-class", type=int, help="first N images of each class")
@click.option(
    "--precision",
    help="registered form: fp32, int8, ... (default: the form the ensemble routes to; "
    "fp32 with --mode tensor)",
)
@click.option("--alias", default="production", help="registry alias to evaluate (default production)")
@click.option("--version", type=int, help="evaluate this registry version instead of the alias")
@click.option("--allow-newest", is_flag=True, help="accept the newest version if the alias is unset")
@click.option("--ensemble", default="cifar10", help="ensemble name for --mode bytes")
@PARAMS
@click.option("--experiment", default="cifar10-offline-eval", help="MLflow experiment")
@click.option("--no-mlflow", is_flag=True, help="write the files only")
@click.option("--samples", type=int, default=10, help="examples in sample_predictions.json")
@click.option("--out", type=PATH, default=Path("reports/offline_eval"))
@server_options
@request_options
def offline_eval(
    images: Path, per_class: int | None, precision: str | None, alias: str, version: int | None,
    allow_newest: bool, ensemble: str, params_file: Path, experiment: str, no_mlflow: bool,
    samples: int, out: Path, server: ServerConnection, sending: RequestOptions,
) -> None:  # fmt: skip
    """Evaluate the registry's version on a labelled folder; refuses a version mismatch."""
    from client.jobs.offline_eval import EvalConfig
    from client.jobs.offline_eval import offline_eval as evaluate

    cfg = EvalConfig(
        images=images, out_dir=out, batch=sending.batch_config(server), precision=precision, alias=alias,
        version=version, allow_newest=allow_newest, per_class=per_class, ensemble=ensemble,
        params=params_file, experiment=experiment, samples=samples, mlflow=not no_mlflow,
    )  # fmt: skip
    m = evaluate(cfg)
    click.echo(
        f"{m['registered_model']} v{m['model_version']}: accuracy {m['accuracy'] * 100:.2f}% on "
        f"{m['tested_samples']} images ({m['failed_samples']} failed, {m['skipped_samples']} skipped) "
        f"-> {out}" + (f", MLflow run {m['mlflow_run_id']}" if m.get("mlflow_run_id") else "")
    )
    sys.exit(exit_codes.FAILED if m["failed_samples"] else exit_codes.OK)


@client.command(epilog=EPILOG, short_help="Confusion-matrix PNG from any predictions.csv.")
@click.option("--csv", "csv_path", type=PATH, required=True)
@click.option("--out", type=PATH, help="PNG path (default: confusion_matrix.png beside the CSV)")
@click.option("--mlflow-run-id", help="attach the PNG to this MLflow run")
@click.option("--title", default="", help="prefix of the figure title")
@VERBOSE
def confusion(csv_path: Path, out: Path | None, mlflow_run_id: str | None, title: str) -> None:
    """Confusion-matrix PNG from any predictions.csv, optionally logged to an MLflow run."""
    from client.jobs.offline_eval import confusion_from_csv

    out = out or csv_path.with_name("confusion_matrix.png")
    s = confusion_from_csv(csv_path, out, run_id=mlflow_run_id, label=title)
    click.echo(f"accuracy {s['accuracy'] * 100:.2f}% (n={s['tested_samples']}) -> {out}")


@client.command(epilog=EPILOG, short_help="Throughput/latency sweep over concurrency levels.")
@click.option("--protocols", type=ChoiceList(("http", "grpc")), default="http,grpc", metavar="http,grpc")
@click.option("--modes", type=ChoiceList(("bytes", "tensor")), default="bytes,tensor", metavar="bytes,tensor")
@click.option(
    "--concurrency", type=IntList(), default="1,2,4,8,16", metavar="N,N,...", help="levels, e.g. 1,2,4,8,16"
)
@click.option("--duration", type=float, default=5.0, help="seconds per level (default 5.0)")
@click.option("--requests", type=int, help="requests per level instead of --duration")
@click.option("--warmup", type=float, default=1.0, help="seconds of discarded warm-up per level")
@click.option("--ensemble", default="cifar10")
@click.option("--classifier", default="wrn_fp32")
@click.option("--classifier-version", default="")
@click.option("--images", type=PATH, help="payload images (default: synthetic)")
@click.option("--payloads", type=int, default=64, help="distinct images cycled through")
@click.option(
    "--self-test",
    is_flag=True,
    help="also measure the generator's own capacity against an instant stub server",
)
@click.option("--self-test-only", is_flag=True, help="only the stub measurement; no server needed")
@click.option("--self-test-duration", type=float, default=2.0, help="seconds per level against the stub")
@click.option("--out", type=PATH, default=Path("reports/bench"))
@server_options
def bench(
    protocols: tuple[str, ...], modes: tuple[str, ...], concurrency: tuple[int, ...], duration: float,
    requests: int | None, warmup: float, ensemble: str, classifier: str, classifier_version: str,
    images: Path | None, payloads: int, self_test: bool, self_test_only: bool, self_test_duration: float,
    out: Path, server: ServerConnection,
) -> None:  # fmt: skip
    """Throughput/latency sweep over concurrency; bench.json + bench.png."""
    from client.tools.load_bench import BenchConfig, run_bench

    cfg = BenchConfig(
        http_url=server.url, grpc_url=server.grpc_url, protocols=protocols, modes=modes,
        concurrency=concurrency, duration_s=duration, requests=requests, warmup_s=warmup,
        ensemble=ensemble, classifier=classifier, classifier_version=classifier_version, images=images,
        payloads=payloads, request_timeout_s=server.request_timeout, connect_timeout_s=server.timeout,
        self_test=self_test, self_test_only=self_test_only, self_test_duration_s=self_test_duration,
    )  # fmt: skip
    report = run_bench(cfg, out)
    for r in report["results"] or report["self_test"]:
        click.echo(
            f"{r['target']:6} {r['protocol']:4} {r['mode']:6} c={r['concurrency']:<3} "
            f"{r['throughput_rps']:9.1f} req/s  p50 {r['latency_ms']['p50']} ms  "
            f"p99 {r['latency_ms']['p99']} ms"
        )
    for note in report["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"-> {out / 'bench.json'}, {out / 'bench.png'}")
    sys.exit(exit_codes.FAILED if any(r["errors"] for r in report["results"]) else exit_codes.OK)


client.add_command(drift)
