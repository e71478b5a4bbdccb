"""``cifar10 optimize``: measure every served form on this host and serve the fastest that keeps
accuracy (:mod:`optimize`). One command with flags, not a group: ``cifar10 optimize --clear``.
"""

from __future__ import annotations

from pathlib import Path

import click

from commands.main import (
    ADMIN_TOKEN_FILE,
    CACHE,
    FLEET,
    PARAMS,
    REPOSITORY,
    SERVER,
    SET,
    TRACKING_URI,
    VERBOSE,
    echo_json,
    settings,
)  # fmt: skip

EXIT_CODES = """\b
exit codes:
  0   a choice was made (and recorded unless --dry-run)
  1   no candidate met the objective (nothing recorded)
  2   bad usage
  3   registry unreachable
  5   nothing registered
"""


@click.command(epilog=EXIT_CODES)
@PARAMS
@SET
@click.option(
    "--images", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="payload images (default: seeded synthetic PNGs).",
)  # fmt: skip
@CACHE
@REPOSITORY
@SERVER
@FLEET
@ADMIN_TOKEN_FILE
@click.option(
    "--kind", type=click.Choice(["KIND_CPU", "KIND_GPU"]), default=None, help="instance kind for sync."
)
@click.option(
    "--backend-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Triton's own backends for the private server (NGC image: /opt/tritonserver/backends, "
    "with $CIFAR10_TRITONSERVER naming /opt/tritonserver/bin/tritonserver).",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/optimize"),
    show_default=True, help="where the table, the PNG and the choice are written.",
)  # fmt: skip
@click.option("--experiment", default="cifar10-optimize", show_default=True, help="MLflow experiment.")
@click.option("--no-mlflow", is_flag=True, help="log nothing to MLflow.")
@click.option("--dry-run", is_flag=True, help="measure and report; record nothing.")
@click.option("--clear", is_flag=True, help="remove the recorded choice, then sync.")
@TRACKING_URI
@VERBOSE
def optimize(
    params_file: Path,
    sets: tuple[str, ...],
    images: Path | None,
    cache: Path,
    repository: str | None,
    server: str | None,
    fleet: bool,
    admin_token_file: Path | None,
    kind: str | None,
    backend_dir: Path | None,
    out: Path,
    experiment: str,
    no_mlflow: bool,
    dry_run: bool,
    clear: bool,
) -> None:
    """Measure every served form on this host and serve the fastest that keeps accuracy.

    For every registered form with a production version (fp32, fp16, int8, a
    TensorRT plan where one was exported), measure throughput and p50/p99
    through a private tritonserver for the grid of batching settings and
    instance counts in params.yaml's optimize section; choose the highest
    throughput with p99 within the budget and test accuracy within the margin
    of fp32's.

    The choice is recorded in the registry and reaches Triton through sync:
    the repository is rewritten, and with --server the live server is rolled
    over (no failed request), with --fleet every replica of params.yaml's
    fleet. The table, a PNG and the choice are written under --out and
    logged to MLflow.
    """
    from commands.main import repository_location
    from optimize import evidence, outcome
    from registry.sync import sync_for

    params = settings(params_file, None, sets)
    repository = repository_location(repository, params_file)

    def synced() -> dict:
        result = sync_for(params, repository, cache, server, admin_token_file, kind, fleet=fleet)
        return result.model_dump(mode="json")

    if clear:
        echo_json({"cleared": outcome.clear_served_choice(params), "sync": synced()})
        return
    measured = outcome.measure_forms(params, cache, images, out, backend_dir)
    click.echo(evidence.table_text(measured.rows, measured.best))
    run_id = "" if no_mlflow else outcome.log_measured(experiment, measured)
    best = outcome.chosen(measured)
    click.echo(f"choice: {best.candidate.label} ({best.throughput_img_s} img/s, p99 {best.p99_ms} ms)")
    if dry_run:
        return
    where = outcome.record_best(params, measured, run_id)
    echo_json({"recorded_on": where, "sync": synced()})
