"""``cifar10 monitor status``: the label-free accuracy estimate and input drift of each served version.

The numbers come from Triton's ``/metrics`` or from Prometheus; :mod:`monitoring.quality_status` reads
and judges them with ``params.yaml``'s ``monitoring`` settings. The exit code says the verdict.
"""

from __future__ import annotations

import dataclasses
import sys

import click
from click.core import ParameterSource

from commands.epilog import exit_codes_epilog
from commands.main import JSON, common_options, echo_json, settings
from common import exit_codes
from common.promql import Prometheus
from monitoring import quality_status
from monitoring.drift import DEFAULT_METRICS_URL

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
    + "  (1 here: an estimate is more than monitoring.accuracy_drop below its reference,\n"
    "   or an input statistic's PSI is above monitoring.input_psi)\n"
)


@click.command(epilog=EPILOG, short_help="Estimated accuracy (no labels) and input drift per version.")
@common_options
@click.option("--metrics-url", default=DEFAULT_METRICS_URL, help=f"Triton /metrics ({DEFAULT_METRICS_URL})")
@click.option("--prometheus", metavar="URL", help="query Prometheus, e.g. http://localhost:9090")
@click.option("--range", "prometheus_range", default="30m", help="Prometheus increase() range (default 30m)")
@click.option(
    "--window", type=float, default=0.0, metavar="S",
    help="with --metrics-url: the change over S seconds instead of the cumulative counts",
)  # fmt: skip
@click.option("--timeout", type=float, default=5.0, help="HTTP timeout in seconds (5.0)")
@JSON
@click.pass_context
def status(
    ctx: click.Context, params_file, profile, sets, metrics_url: str, prometheus: str | None,
    prometheus_range: str, window: float, timeout: float, as_json: bool,
) -> None:  # fmt: skip
    """Estimated accuracy of each served version without labels, and the drift of its inputs.

    \b
    Examples:
      cifar10 monitor status                                   # Triton /metrics, since start
      cifar10 monitor status --window 60                       # the last minute
      cifar10 monitor status --prometheus http://localhost:9090 --range 30m   # what the alerts see
    """
    if prometheus is not None and ctx.get_parameter_source("metrics_url") is ParameterSource.COMMANDLINE:
        raise click.UsageError("--prometheus is not allowed with --metrics-url: give one source")
    cfg = settings(params_file, profile, sets).monitoring
    if prometheus is not None:
        samples = quality_status.query(Prometheus(prometheus, timeout), prometheus_range)
        source = f"Prometheus {prometheus}, increase over {prometheus_range}"
    else:
        samples = quality_status.scrape(metrics_url, window, timeout)
        source = f"{metrics_url}" + (f", change over {window:g} s" if window > 0 else ", since start")
    rows = quality_status.status(samples, cfg)
    alerting = any(r.alerting(cfg) for r in rows)
    if as_json:
        echo_json(
            {
                "source": source,
                "alert": alerting,
                "versions": [
                    dataclasses.asdict(r)
                    | {
                        "estimate": r.estimate,
                        "reliable": r.reliable(cfg),
                        "accuracy_low": r.accuracy_low(cfg),
                    }
                    for r in rows
                ],
            }
        )
    else:
        click.echo(f"source: {source}")
        click.echo(quality_status.render(rows, cfg))
    sys.exit(exit_codes.FAILED if alerting else exit_codes.OK)
