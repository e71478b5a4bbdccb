"""``cifar10``: the root group, the options every group shares (defined once), and one error line.

click, not typer: click is already installed with MLflow and DVC (one fewer dependency to keep), and
its groups, contexts and shell completion are all a command of this shape needs; typer would add a
layer of type-hint parsing over the same click objects. Each subcommand reads its options into typed
values and calls a library function; a failure is one ``error: ...`` line and the exit code of
:mod:`common.exit_codes`. Groups load lazily, so ``cifar10 --help`` does not import torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from commands.epilog import exit_codes_epilog
from common import exit_codes
from common.exit_codes import ExitError

# Group (or command) name -> "module:attribute". One module per pipeline stage, so that
# ``dvc.yaml``'s dependencies (what a stage's command imports) stay per stage.
GROUPS = {
    "data": "commands.data_group:data",
    "train": "commands.train_group:train",
    "evaluate": "commands.evaluate_group:evaluate",
    "export": "commands.export_group:export",
    "registry": "commands.registry_group:registry",
    "serve": "commands.serve_group:serve",
    "client": "commands.client_group:client",
    "optimize": "commands.optimize_group:optimize",
    "release": "commands.release_group:release",
    "tune": "commands.tune_group:tune",
    "monitor": "commands.monitor_group:monitor",
    "params": "commands.params_group:params",
    "stores": "commands.stores_group:stores",
}
EPILOG = exit_codes_epilog(  # the table itself (common.exit_codes), not a retelling of it
    exit_codes.help_text() + 'completion: eval "$(_CIFAR10_COMPLETE=bash_source cifar10)" (or zsh_source)'
)
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 80}


def _verbose(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    from common.cli import setup_logging

    if not ctx.resilient_parsing:
        setup_logging(value)


def _tracking(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value and not ctx.resilient_parsing:
        os.environ["MLFLOW_TRACKING_URI"] = value


# The options several groups share, each defined here once.
def _params(ctx: click.Context, _: click.Parameter, value: Path) -> Path:
    """The stores (tracking URI, ...) of this file are where every MLflow call of the command goes."""
    if not ctx.resilient_parsing:
        from common import tracking

        tracking.use(value)
    return value


PARAMS = click.option(
    "--params", "params_file", type=click.Path(dir_okay=False, path_type=Path), default=Path("params.yaml"),
    show_default=True, callback=_params,
    help="params.yaml to read (keys it leaves out come from the project's own).",
)  # fmt: skip
PROFILE = click.option("--profile", default=None, help="training profile (default: the file's).")
SET = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE",
    help="override one setting, e.g. --set serving.max_queue_delay_us=1000 (repeatable).",
)  # fmt: skip
JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table.")
VERBOSE = click.option(
    "-v", "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_verbose,
    help="debug logging.",
)  # fmt: skip
TRACKING_URI = click.option(
    "--tracking-uri", default=None, expose_value=False, callback=_tracking, is_eager=True,
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else params.yaml stores.tracking).",
)  # fmt: skip
SERVER = click.option(
    "--server", default=None, help="gRPC host:port of a running server (e.g. 127.0.0.1:8001)."
)
FLEET = click.option(
    "--fleet", is_flag=True,
    help="roll every replica of params.yaml's fleet, one at a time, each drained first (docs/fleet.md).",
)  # fmt: skip
ADMIN_TOKEN_FILE = click.option(
    "--admin-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="token unlocking the server's model-repository API (or $CIFAR10_ADMIN_TOKEN).",
)  # fmt: skip
REPOSITORY = click.option(
    "--repository", default=None,
    help="the Triton model repository: a folder or s3://host:port/bucket/prefix "
    "(default: $CIFAR10_MODEL_REPOSITORY, else params.yaml stores.model_repository).",
)  # fmt: skip


def repository_location(option: str | None, params_file: Path | None = None) -> str:
    """``--repository``, else ``$CIFAR10_MODEL_REPOSITORY``, else ``stores.model_repository`` of the file."""
    from common import stores
    from common.params import resolve

    cfg = None  # read only when neither the option nor the variable decides (stores.resolve's order)
    if not option and not os.environ.get(stores.ENV["model_repository"]):
        path = params_file if params_file is not None and Path(params_file).is_file() else None
        cfg = resolve(path).params.stores
    return stores.resolve(cfg, "model_repository", option=option).uri


CACHE = click.option(
    "--cache", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts/registry_cache"),
    show_default=True, help="where registry artifacts are downloaded.",
)  # fmt: skip


def common_options(fn: Any) -> Any:
    """``--params``, ``--profile``, ``--set``, ``-v``, ``--tracking-uri``: for commands reading settings."""
    for option in (TRACKING_URI, VERBOSE, SET, PROFILE, PARAMS):
        fn = option(fn)
    return fn


def settings(params_file: Path, profile: str | None = None, sets: tuple[str, ...] = ()):
    """The validated settings a command runs with (:func:`common.params.resolve`)."""
    from common import tracking
    from common.params import resolve

    params = resolve(params_file, profile, sets).params
    tracking.use(params.stores)
    return params


def echo_json(value: Any, indent: int | None = 2) -> None:
    """A record (pydantic), a TypedDict or plain data as JSON on stdout (``indent=None``: one line)."""
    import json

    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    click.echo(json.dumps(value, indent=indent, default=str))


class Cifar10Group(click.Group):
    """Lazily loaded groups; expected failures become one line and their exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(GROUPS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in GROUPS:
            return None
        module, attribute = GROUPS[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ExitError as exc:
            fail(str(exc), exc.exit_code)
        except (ValueError, FileNotFoundError) as exc:  # bad input the library named
            fail(str(exc), exit_codes.USAGE)
        except KeyboardInterrupt:
            fail("interrupted", exit_codes.INTERRUPTED, prefix="")
        except Exception as exc:
            module = type(exc).__module__
            if module.startswith(("mlflow", "sqlalchemy", "psycopg")):  # a store, or the server before it
                from common.stores import redact

                first = redact((str(exc).splitlines() or [type(exc).__name__])[0])
                what = "MLflow registry" if module.startswith("mlflow") else "database"
                fail(f"{what} unavailable: {first}", exit_codes.UNAVAILABLE)
            raise


def fail(message: str, code: int, prefix: str = "error: ") -> None:
    click.echo(f"{prefix}{message}", err=True)
    sys.exit(code)


@click.group(cls=Cifar10Group, context_settings=CONTEXT, epilog=EPILOG)
def cli() -> None:
    """CIFAR-10 from raw images to a monitored, versioned Triton service.

    \b
    Examples:
      cifar10 params check
      cifar10 data prepare --out data/prepared
      cifar10 registry list
      cifar10 registry promote --precision int8 --version 3
      cifar10 serve --model-repository model_repository
      cifar10 client batch --images data/prepared/test_images --limit 100
      cifar10 release start --precision int8 --version 3
    """


def main(argv: list[str] | None = None, prog_name: str = "cifar10") -> None:
    """Run the command; a usage error is one ``error:`` line too (click would print a usage block)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code = cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog_name
        fail(f"{exc.format_message()} (see {where} --help)", exit_codes.USAGE)
    except click.exceptions.ClickException as exc:  # a bad file or parameter click checked itself
        fail(exc.format_message(), exit_codes.USAGE)
    except click.exceptions.Abort:
        fail("interrupted", exit_codes.INTERRUPTED, prefix="")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
