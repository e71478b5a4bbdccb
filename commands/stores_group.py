"""``cifar10 stores``: where each store lives, whether it answers, a team's MLflow server, the DVC remote."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from commands.main import JSON, PARAMS, SET, echo_json, settings
from common.exit_codes import UNAVAILABLE


@click.group()
def stores() -> None:
    """The stores (params.yaml `stores`, each overridden by its tool's variable; docs/stores.md).

    \b
    Examples:
      cifar10 stores check
      PGPASSWORD=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        cifar10 stores mlflow-server --backend-store-uri postgresql://mlflow@db:5432/mlflow
      cifar10 stores dvc-remote && dvc push
    """


@stores.command()
@PARAMS
@SET
@JSON
def show(params_file: Path, sets: tuple[str, ...], as_json: bool) -> None:
    """Each store's URI in force (passwords redacted) and where it came from."""
    from stores.probe import resolved

    rows = [
        {"store": s.key, "uri": s.shown, "source": s.source}
        for s in resolved(settings(params_file, None, sets).stores)
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['store']:<17} {row['uri'] or '-':<60} {row['source']}")


@stores.command()
@PARAMS
@SET
@JSON
def check(params_file: Path, sets: tuple[str, ...], as_json: bool) -> None:
    """Reach every store with the credentials in the environment; exit 3 if one does not answer."""
    from stores.probe import check as probe

    probes = probe(settings(params_file, None, sets).stores)
    if as_json:
        echo_json([p.model_dump() for p in probes])
    else:
        for p in probes:
            click.echo(f"{'ok ' if p.ok else 'BAD'} {p.store:<17} {p.uri or '-':<55} {p.detail}")
    if not all(p.ok for p in probes):
        sys.exit(UNAVAILABLE)


@stores.command("mlflow-server")
@PARAMS
@SET
@click.option(
    "--backend-store-uri",
    default=None,
    help="the server's database (default: $MLFLOW_BACKEND_STORE_URI, else stores.tracking).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to bind (0.0.0.0: all).")
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--dry-run", is_flag=True, help="print the command (passwords redacted) and exit.")
def mlflow_server(
    params_file: Path, sets: tuple[str, ...], backend_store_uri: str | None, host: str, port: int,
    workers: int, dry_run: bool,
) -> None:  # fmt: skip
    """Run MLflow's tracking server on the team's database, proxying artifacts to stores.artifacts.

    Clients then need only MLFLOW_TRACKING_URI=http://HOST:PORT: the database password and the S3
    keys stay in this process's environment.
    """
    import os

    from stores.mlflow_server import server_command, shown

    argv, env = server_command(
        settings(params_file, None, sets).stores, host, port, workers, backend_store_uri
    )
    click.echo(f"exec: {shown(argv)}", err=True)
    if dry_run:
        return
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


@stores.command("dvc-remote")
@PARAMS
@SET
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="the DVC project.",
)
def dvc_remote(params_file: Path, sets: tuple[str, ...], repo: Path) -> None:
    """Make stores.dvc_remote this project's default DVC remote (in .dvc/config.local)."""
    from stores.dvc_remote import configure

    echo_json(configure(settings(params_file, None, sets).stores, repo))
