"""``cifar10 monitor``: judge what is served, and write the generated monitoring files.

``status`` (estimated accuracy, input drift) and ``drift`` (prediction mix) judge what is served;
``reference-rules``, ``quality-rules`` and ``dashboard`` write files generated from data
(``meta.json``), settings (``params.yaml``) and code (:data:`monitoring.dashboard.PANELS`); with
``--check`` they write nothing and exit 1 when the file differs from what they would write.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

import monitoring.dashboard as board
import monitoring.quality_rules as quality
import monitoring.reference_rules as rules
from commands.drift_command import drift
from commands.main import common_options, settings
from commands.quality_command import status
from monitoring.drift import DEFAULT_REFERENCE

PATH = click.Path(path_type=Path)


def _shown(default: Path) -> str:
    """A default file of this repository, as its path from the repository's root."""
    return default.relative_to(Path(__file__).resolve().parents[1]).as_posix()


@click.group()
def monitor() -> None:
    """Estimated accuracy, input and prediction drift, and the generated rules and dashboard."""


monitor.add_command(drift)
monitor.add_command(status)


def _check(out: Path, current: bool) -> NoReturn:
    click.echo(f"{out}: {'up to date' if current else 'out of date'}")
    sys.exit(0 if current else 1)


@monitor.command("reference-rules", short_help="Write the validation class mix as Prometheus rules.")
@click.option("--reference", type=PATH, default=DEFAULT_REFERENCE, help=f"meta.json ({DEFAULT_REFERENCE})")
@click.option("--out", type=PATH, default=rules.DEFAULT_OUT, help=f"rule file ({_shown(rules.DEFAULT_OUT)})")
@click.option("--check", is_flag=True, help="exit 1 if --out differs, write nothing")
def reference_rules(reference: Path, out: Path, check: bool) -> None:
    """Write the validation split's class distribution as Prometheus recording rules.

    The drift alert (rules/drift.yml) compares the served prediction mix with the mix the model was
    validated on; one constant recording rule per class makes those shares Prometheus series.
    Generated from meta.json of the prepare stage, so rerun after re-preparing the data.
    """
    text = rules.rules_text(reference)
    if check:
        _check(out, rules.is_current(out, text))
    rules.write(out, text)
    click.echo(f"wrote {out}")


@monitor.command(short_help="Write the Grafana dashboard from monitoring/dashboard.py.")
@click.option("--out", type=PATH, default=board.OUT, help=f"dashboard JSON ({_shown(board.OUT)})")
@click.option("--check", is_flag=True, help="exit 1 if --out is stale, write nothing")
def dashboard(out: Path, check: bool) -> None:
    """Write the Grafana dashboard, generated from the panel list in monitoring/dashboard.py.

    Regenerate after editing PANELS; each panel is its title, unit and PromQL.
    """
    if check:
        _check(out, board.is_current(out))
    board.write(out)
    click.echo(f"wrote {out} ({len(board.PANELS)} panels)")


@monitor.command("quality-rules", short_help="Write the accuracy-estimate and input-drift rules.")
@common_options
@click.option(
    "--out", type=PATH, default=quality.DEFAULT_OUT, help=f"rule file ({_shown(quality.DEFAULT_OUT)})"
)
@click.option("--check", is_flag=True, help="exit 1 if --out differs, write nothing")
def quality_rules(
    params_file: Path, profile: str | None, sets: tuple[str, ...], out: Path, check: bool
) -> None:
    """Write the label-free accuracy estimate's and input drift's rules and alerts (rules/quality.yml).

    Their thresholds are params.yaml's monitoring section, so rerun after changing it.
    """
    text = quality.render(settings(params_file, profile, sets).monitoring)
    if check:
        _check(out, rules.is_current(out, text))
    rules.write(out, text)
    click.echo(f"wrote {out}")
