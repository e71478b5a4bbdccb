"""``cifar10 tune run|apply``: the Optuna study of the active profile, and its best settings trained
with DVC (:mod:`tuning`). ``--params``/``--profile``/``--set`` belong to the group:
``cifar10 tune --profile cpu run``.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click

from commands.main import common_options, echo_json, settings


@dataclass(frozen=True)
class Chosen:
    """The group's options: which settings the study searches around."""

    params_file: Path
    profile: str | None
    sets: tuple[str, ...]


@click.group()
@common_options
@click.pass_context
def tune(ctx: click.Context, params_file: Path, profile: str | None, sets: tuple[str, ...]) -> None:
    """Run (or continue) the Optuna study, and train its best settings with DVC.

    \b
    run     the study of the active profile (tune in params.yaml) to its
            budget; writes reports/tune/{summary.json, best_params.json,
            *.png} and logs the study to MLflow (experiment cifar10-tune: the
            study a parent run, each trial a nested run). Killed? Run it
            again: finished trials are kept and not repeated.
    apply   dvc exp run -S profiles.<profile>.<key>=<value> ... with the best
            trial's settings: the full pipeline trained with them, as a DVC
            experiment (--dry-run prints it).
    """
    ctx.obj = Chosen(params_file, profile, sets)


@tune.command(short_help="run or continue the study.")
@click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=Path("data/prepared"),
    show_default=True, help="the prepared data (cifar10 data prepare).",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports/tune"),
    show_default=True, help="summary, best settings and plots.",
)  # fmt: skip
@click.option(
    "--storage", default=None, help="Optuna storage URL (default: $OPTUNA_STORAGE, else stores.optuna)."
)
@click.pass_obj
def run(chosen: Chosen, data: Path, out: Path, storage: str | None) -> None:
    """Run or continue the study to its budget; prints its summary as JSON."""
    from tuning.study import run_study

    echo_json(run_study(settings(chosen.params_file, chosen.profile, chosen.sets), data, out, storage))


@tune.command(
    short_help="train the best settings fully: dvc exp run -S ...",
    context_settings={"ignore_unknown_options": True},
)
@click.option(
    "--best", type=click.Path(dir_okay=False, path_type=Path),
    default=Path("reports/tune/best_params.json"), show_default=True, help="the study's best settings.",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="print the command only.")
@click.argument("dvc_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def apply(ctx: click.Context, best: Path, dry_run: bool, dvc_args: tuple[str, ...]) -> None:
    """Train the best settings fully: dvc exp run -S ... DVC_ARGS (passed on, e.g. --name tuned)."""
    from tuning.best import dvc_apply_command

    command = dvc_apply_command(best, dvc_args)
    click.echo(shlex.join(command))
    if not dry_run:
        ctx.exit(subprocess.call(command))
