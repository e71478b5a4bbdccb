"""``cifar10 release start|status|abort|report``: a registry version to production through gate, shadow
and canary steps on the live server, judged from Prometheus (:mod:`release`).

The options saying where the release runs (params, repository, server, Prometheus...) belong to the
group and go before the subcommand: ``cifar10 release --server H:P start --version 7``. stdout
carries one JSON answer; the story (logging, the report's table) goes to stderr.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import click

from commands.main import ADMIN_TOKEN_FILE, PARAMS, SET, TRACKING_URI, VERBOSE, echo_json, settings

EXIT_CODES = """\b
exit codes:
  0   promoted (start) / done
  1   the gate refused, or a step breached (rolled back), or the release
      was aborted elsewhere
  2   bad usage
  3   registry, server or Prometheus unavailable
  5   no such version, alias or release
  9   another release, a live owner, or a start that claimed it at the
      same instant is in the way
"""

DirPath = click.Path(file_okay=False, path_type=Path)


@dataclass(frozen=True)
class Where:
    """The group's options: where the release runs."""

    params_file: Path
    sets: tuple[str, ...]
    repository: str | None
    cache: Path | None
    prepared: Path | None
    server: str | None
    admin_token_file: Path | None
    prometheus: str | None
    experiment: str

    def context(self):
        from release.overview import release_context

        return release_context(
            settings(self.params_file, None, self.sets),
            self.params_file,
            self.server,
            repository=self.repository,
            cache=self.cache,
            admin_token_file=self.admin_token_file,
            prometheus_url=self.prometheus,
            experiment=self.experiment,
            prepared=self.prepared,
        )


@click.group(epilog=EXIT_CODES)
@PARAMS
@SET
@click.option(
    "--repository", default=None,
    help="the served model repository, a folder or s3://host:port/bucket/prefix (default: "
    "$CIFAR10_MODEL_REPOSITORY, else stores.model_repository beside --params).",
)  # fmt: skip
@click.option(
    "--cache", type=DirPath, default=None,
    help="artifacts (default: artifacts/registry_cache/ beside --params).",
)  # fmt: skip
@click.option(
    "--prepared", type=DirPath, default=None,
    help="prepared data, to score production on the candidate's test rows (default: data/prepared/).",
)  # fmt: skip
@click.option(
    "--server", default=None,
    help="gRPC host:port of the live server (default: 127.0.0.1:8001; with a fleet in params.yaml, "
    "every replica of it, probed through fleet.balancer).",
)  # fmt: skip
@ADMIN_TOKEN_FILE
@click.option(
    "--prometheus", default=None, help="Prometheus URL (default: params.yaml release.prometheus_url)."
)
@click.option(
    "--experiment",
    default="cifar10-release",
    show_default=True,
    help="MLflow experiment of the release runs.",
)
@TRACKING_URI
@VERBOSE
@click.pass_context
def release(ctx: click.Context, **options) -> None:
    """Move a registry version to production through gate, shadow and canary steps.

    \b
      start --version N   gate (parity, accuracy vs production, answers on the
                          live server), then shadow, then the canary weights of
                          params.yaml, then production; a breach rolls back and
                          exits 1. Run it again after a crash: it resumes at the
                          recorded step.
      status              the step, its window, and the live figures against
                          their limits
      abort               back to production at once (a running controller
                          stops at its next check)
      report              per-version table and PNG over the latest release
                          (from Prometheus)
    """
    from rich.console import Console

    for handler in logging.getLogger().handlers:  # stdout carries the JSON answer; the story goes to stderr
        if hasattr(handler, "console"):
            handler.console = Console(stderr=True)
    ctx.obj = Where(**options)


pass_where = click.make_pass_decorator(Where)


@release.command(short_help="gate, shadow, canary, promote (or resume the release in progress).")
@click.option("--version", type=int, required=True, help="the candidate's registry version.")
@click.option(
    "--precision",
    default=None,
    help="the candidate's form (default: the one the ensemble routes to), e.g. int8.",
)
@click.option("--force", is_flag=True, help="start even if the accuracy or live gate refuses.")
@click.option(
    "--reason", default=None, help="why --force (required with it; recorded in the registry and MLflow)."
)
@pass_where
def start(where: Where, version: int, precision: str | None, force: bool, reason: str | None) -> None:
    """Gate, shadow, canary, promote (or resume the release in progress); a breach rolls back."""
    from release import controller

    if force and not (reason or "").strip():
        raise ValueError("--force needs --reason: it is recorded with the release")
    echo_json(controller.start(where.context(), version, precision, reason if force else None))


@release.command(short_help="the current step and its live figures against their limits.")
@pass_where
def status(where: Where) -> None:
    """The current step, its window, its owner and its live figures against their limits."""
    from release.overview import release_status

    echo_json(release_status(where.context()))


@release.command(short_help="back to production at once.")
@click.option("--reason", default="aborted by hand", show_default=True, help="recorded with the release.")
@pass_where
def abort(where: Where, reason: str) -> None:
    """Back to production at once (a running controller stops at its next check)."""
    from release import controller

    echo_json(controller.abort(where.context(), reason))


@release.command(short_help="per-version table and PNG over the latest release.")
@click.option(
    "--out", type=DirPath, default=Path("reports/release"), show_default=True, help="where they go."
)
@pass_where
def report(where: Where, out: Path) -> None:
    """Per-version table (stderr, and JSON) and PNG over the latest release, from Prometheus."""
    from release.overview import report_latest_release

    rows, files = report_latest_release(where.context(), out)
    _print_table(rows)
    echo_json({k: str(v) for k, v in files.items()})


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="release, per version")
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)] if rows else []
    for key in keys:
        table.add_column(key)
    for row in rows:
        table.add_row(*("-" if row[k] is None else str(row[k]) for k in keys))
    console = Console(stderr=True)
    console.print(table)
    for row in rows:
        if row.get("class_agreement"):
            shares = ", ".join(f"{c} {v:.3f}" for c, v in row["class_agreement"].items())
            console.print(f"{row['role']} v{row['version']} shadow agreement per class: {shares}")
