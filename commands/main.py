"""``cifar10``: the root group and the options every group shares, defined once.

click, not typer: click is already installed with MLflow and DVC (one fewer dependency to keep), and
its groups, contexts and shell completion are all a command of this shape needs. Each subcommand
calls a library function with typed arguments; a failure is one ``error: ...`` line and the exit
code of :mod:`common.exit_codes`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from common import exit_codes
from common.exit_codes import ExitError

PARAMS_OPTION = click.option(
    "--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=Path("params.yaml"),
    show_default=True, help="params.yaml to read (missing keys come from the project's own).",
)  # fmt: skip
PROFILE_OPTION = click.option(
    "--profile", default=None, help="training profile (default: the file's `profile`)."
)
SET_OPTION = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="override one setting, e.g. --set serving.max_queue_delay_us=1000 (repeatable).",
)  # fmt: skip
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text.")


COMPLETION = 'Shell completion: eval "$(_CIFAR10_COMPLETE=bash_source cifar10)" (or zsh_source).\n\n'


class Cifar10Group(click.Group):
    """Expected failures become one line and their exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ExitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(exit_codes.INTERRUPTED)


@click.group(
    cls=Cifar10Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 80},
    epilog='Shell completion: eval "$(_CIFAR10_COMPLETE=bash_source cifar10)" (zsh_source, fish_source).\n\n'
    + exit_codes.help_text(),
)
def cli() -> None:
    """CIFAR-10 from raw images to a monitored, versioned Triton service.

    \b
    Examples:
      cifar10 params check
      cifar10 params show --set serving.max_queue_delay_us=1000
    """


def main() -> None:
    from commands.params_group import params

    cli.add_command(params)
    cli(prog_name="cifar10")
