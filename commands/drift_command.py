"""``cifar10 monitor drift`` (also ``cifar10 client drift``): judge the served prediction mix.

The options choose where the counts come from (Triton's ``/metrics`` or Prometheus) and how they are
judged; :mod:`monitoring.drift_check` reads and judges them. The exit code says the verdict.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from commands.epilog import exit_codes_epilog
from commands.main import JSON, echo_json
from common import exit_codes
from monitoring.drift import (
    DEFAULT_METRICS_URL,
    DEFAULT_MIN_COUNT,
    DEFAULT_REFERENCE,
    DEFAULT_THRESHOLD,
    EPSILON,
    render_table,
)
from monitoring.drift_check import CountSource, DriftSettings, check, report

EPILOG = exit_codes_epilog(
    exit_codes.help_text(
        (
            exit_codes.OK,
            exit_codes.FAILED,
            exit_codes.USAGE,
            exit_codes.UNAVAILABLE,
            exit_codes.TOO_LITTLE_DATA,
        )
    )
    + "  (1 here: some model version's PSI is above --threshold)\n"
)


@click.command(epilog=EPILOG, short_help="PSI of the served prediction mix vs the validation split.")
@click.option("--metrics-url", default=DEFAULT_METRICS_URL, help=f"Triton /metrics ({DEFAULT_METRICS_URL})")
@click.option("--prometheus", metavar="URL", help="query Prometheus, e.g. http://localhost:9090")
@click.option("--range", "prometheus_range", default="30m", help="Prometheus increase() range (default 30m)")
@click.option(
    "--window", type=float, default=0.0, metavar="S",
    help="with --metrics-url: judge the change over S seconds instead of the cumulative counts",
)  # fmt: skip
@click.option(
    "--reference", type=click.Path(path_type=Path), default=DEFAULT_REFERENCE,
    help=f"meta.json ({DEFAULT_REFERENCE})",
)  # fmt: skip
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, help=f"PSI limit ({DEFAULT_THRESHOLD})")
# no default here: click would turn the int into 200.0, and the JSON report prints it as given
@click.option(
    "--min-count", type=float, default=None,
    help=f"predictions a model version needs before it is judged (default {DEFAULT_MIN_COUNT})",
)  # fmt: skip
@click.option("--epsilon", type=float, default=EPSILON, help=f"floor of every share ({EPSILON})")
@click.option("--model", help="only this classifier (label 'model')")
@click.option("--version", help="only this version (label 'version')")
@click.option("--timeout", type=float, default=5.0, help="HTTP timeout in seconds (5.0)")
@JSON
@click.pass_context
def drift(
    ctx: click.Context, metrics_url: str, prometheus: str | None, prometheus_range: str, window: float,
    reference: Path, threshold: float, min_count: float | None, epsilon: float, model: str | None,
    version: str | None, timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """PSI of the served prediction mix against the validation class distribution.

    Counts come from Triton's /metrics (cumulative, or the change over --window seconds) or from
    Prometheus (--prometheus: increase() over --range, what the drift alert sees); give one of
    --metrics-url and --prometheus.
    """
    if prometheus is not None and ctx.get_parameter_source("metrics_url") is ParameterSource.COMMANDLINE:
        raise click.UsageError("--prometheus is not allowed with --metrics-url: give one source")
    source = CountSource(metrics_url, prometheus, prometheus_range, window, timeout, model, version)
    settings = DriftSettings(
        source, reference, threshold, DEFAULT_MIN_COUNT if min_count is None else min_count, epsilon
    )
    verdict = check(settings)
    if as_json:
        echo_json(report(settings, verdict))
    else:
        click.echo(f"source: {verdict.source}; reference: {reference}")
        click.echo(render_table(verdict.results, verdict.reference, threshold))
    sys.exit(exit_codes.FAILED if verdict.drifted else exit_codes.OK)
