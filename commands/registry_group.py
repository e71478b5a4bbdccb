"""``cifar10 registry``: register exports, move aliases, sync the Triton repository, list and show.

Commands that change what serves (``promote``, ``rollback``, ``sync``) never fall back to a guess:
on a registry error, a missing alias or a malformed tag they stop before writing anything (exit
codes 3, 5 and 2). ``--params`` and ``-v`` go before the subcommand, as they did for the
old ``cifar10-registry`` script.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from commands.main import (
    ADMIN_TOKEN_FILE,
    CACHE,
    FLEET,
    JSON,
    PARAMS,
    REPOSITORY,
    SERVER,
    TRACKING_URI,
    VERBOSE,
    echo_json,
    settings,
)  # fmt: skip

FILE = click.Path(dir_okay=False, path_type=Path)
FOLDER = click.Path(file_okay=False, path_type=Path)
ALIAS = click.Choice(("production", "staging"))


def _model(precision: str, model: str | None) -> str:
    return model or settings(click.get_current_context().obj["params"]).registry.registered_name(precision)


def _alias(alias: str | None, stage: str | None) -> str:
    from registry.aliases import alias_for

    if alias and stage:
        raise click.UsageError("--alias and --stage are alternatives: give one")
    return alias_for(alias or (None if stage else "production"), stage)


def _which(fn):
    fn = click.option("--model", default=None, help="registered model name (overrides --precision).")(fn)
    return click.option(
        "--precision", default="fp32", show_default=True, help="served form: fp32 fp16 int8 trt_fp16."
    )(fn)


def _alias_options(fn):
    fn = click.option("--stage", default=None, help="old MLflow stage name: Production or Staging.")(fn)
    return click.option("--alias", default=None, help="the alias (default: production).")(fn)


@click.group()
@PARAMS
@VERBOSE
@TRACKING_URI
@click.pass_context
def registry(ctx: click.Context, params_file: Path) -> None:
    """Versions in the MLflow Model Registry, their aliases, and the repository Triton serves.

    \b
    Examples:
      cifar10 registry list
      cifar10 registry promote --precision int8 --version 3
      cifar10 registry sync --server localhost:8001 \\
        --admin-token-file .triton-token
    """
    ctx.obj = {"params": params_file}


@registry.command()
@click.option("--manifest", type=FILE, default=Path("artifacts/export/manifest.json"), show_default=True)
@click.option("--metrics", type=FILE, default=None, hidden=True, help="deprecated and ignored.")
@click.option("--report", type=FILE, default=None, help="write the registered versions here (JSON).")
@click.option(
    "--promote", "promote_to", type=ALIAS, default=None, help="also point this alias at the new versions."
)
@click.pass_obj
def register(
    obj: dict, manifest: Path, metrics: Path | None, report: Path | None, promote_to: str | None
) -> None:
    """Register every exported artifact that passed its parity gate (idempotent)."""
    from common.fsutil import write_json
    from registry import aliases, store

    if metrics is not None:
        logging.getLogger(__name__).warning(
            "--metrics is ignored: each version is tagged with the accuracy its own artifact scored at export"
        )
    rows = store.register_manifest(manifest, settings(obj["params"]).registry)
    if promote_to:
        for row in rows:
            if row["version"] is not None:
                row[promote_to] = aliases.promote(row["name"], promote_to, row["version"])["version"]
    if report:
        write_json(report, {"versions": rows})
    echo_json(rows)


@registry.command()
@_which
@_alias_options
@click.option("--version", type=int, required=True, help="the version the alias will name.")
def promote(precision: str, model: str | None, alias: str | None, stage: str | None, version: int) -> None:
    """Point an alias at a version (its history keeps the previous one for rollback)."""
    from registry import aliases

    echo_json(aliases.promote(_model(precision, model), _alias(alias, stage), version))


@registry.command()
@_which
@_alias_options
def rollback(precision: str, model: str | None, alias: str | None, stage: str | None) -> None:
    """Re-point an alias at the version it named before (repeatable)."""
    from registry import aliases

    echo_json(aliases.rollback(_model(precision, model), _alias(alias, stage)))


@registry.command()
@REPOSITORY
@CACHE
@SERVER
@ADMIN_TOKEN_FILE
@click.option(
    "--kind", type=click.Choice(("KIND_CPU", "KIND_GPU")), default=None, help="override serving.kind."
)
@click.option(
    "--tensorrt-version", default=None, help="the serving host's TensorRT (default: compose.yaml's image)."
)
@click.option(
    "--gpu-arch", default=None, help="the serving GPU's compute capability, e.g. 9.0 (default: nvidia-smi)."
)
@click.option(
    "--prune", is_flag=True,
    help="S3 without --server: also delete retired versions' files (every server has moved off them).",
)  # fmt: skip
@FLEET
@click.pass_obj
def sync(
    obj: dict,
    repository: str | None,
    cache: Path,
    server: str | None,
    admin_token_file: Path | None,
    kind: str | None,
    tensorrt_version: str | None,
    gpu_arch: str | None,
    prune: bool,
    fleet: bool,
) -> None:
    """Write the Triton model repository from the aliases; with --server, roll the live server over.

    With --fleet, roll every replica of params.yaml's fleet instead, one at a time, each drained in
    the balancer first (docs/fleet.md).

    The repository is a folder (swapped in atomically) or s3://host:port/bucket/prefix (published
    objects first, each checked, configs last; docs/stores.md).
    """
    from commands.main import repository_location
    from registry.sync import sync_for

    params = settings(obj["params"])
    where = repository_location(repository, obj["params"])
    echo_json(
        sync_for(
            params, where, cache, server, admin_token_file, kind, tensorrt_version, gpu_arch, prune, fleet
        )
    )


@registry.command()
@_which
@click.option(
    "--version", "versions", type=int, multiple=True, help="the version(s); default: every old one."
)
@CACHE
@click.option(
    "--data",
    type=FOLDER,
    default=Path("data/prepared"),
    show_default=True,
    help="the prepared data, for the input example and the figures' datasets (optional).",
)
@click.pass_obj
def migrate(
    obj: dict, precision: str, model: str | None, versions: tuple[int, ...], cache: Path, data: Path
) -> None:
    """Re-register versions from before MLflow Models as MLflow Models (same file; aliases follow)."""
    import dataclasses

    from registry import migrate as migration

    params = settings(obj["params"])
    name = _model(precision, model)
    rows = [
        migration.migrate(name, v, cache, data, params.serving)
        for v in versions or migration.old_versions(name)
    ]
    echo_json([dataclasses.asdict(r) for r in rows])


@registry.command("serving-input")
@click.argument("images", type=FOLDER)
@click.option("--out", type=FILE, required=True, help="the JSON file to write.")
def serving_input(images: Path, out: Path) -> None:
    """A folder of PNG/JPEG files as MLflow's scoring input (for mlflow models predict/serve)."""
    from mlmodel.serving_input import image_files, serving_input

    files = image_files(images)
    out.write_text(serving_input(files))
    echo_json({"images": len(files), "out": str(out), "order": "sorted paths"})


@registry.command("import-run")
@click.argument("folder", type=FOLDER)
@click.option(
    "--run-file", type=FILE, default=None, help="write {run_id} here, for `cifar10 export --run-file`."
)
def import_run(folder: Path, run_file: Path | None) -> None:
    """Replay a training run folder (made where MLflow was missing) into MLflow."""
    from common.fsutil import write_json
    from common.run_folder import import_run as replay

    run_id, created = replay(folder)
    if run_file:
        write_json(run_file, {"run_id": run_id})
    echo_json({"run_id": run_id, "created": created})


@registry.command()
@click.argument("pack_dir", type=FOLDER)
@click.option("--out", type=FILE, required=True, help="the fp32 safetensors to write.")
def unpack(pack_dir: Path, out: Path) -> None:
    """Check and unpack weights packed on a GPU machine (fp32 safetensors)."""
    from training.weight_pack import unpack as unpack_weights

    echo_json({"weights": str(unpack_weights(pack_dir, out))})


@registry.command("list")
@_which
@JSON
@click.pass_obj
def list_versions(obj: dict, precision: str, model: str | None, as_json: bool) -> None:
    """Every registered version (a table; --json for machines)."""
    from registry import catalog, tables

    out = catalog.list_models(settings(obj["params"]).registry)
    echo_json(out) if as_json else tables.print_list(out)


@registry.command()
@_which
@JSON
def show(precision: str, model: str | None, as_json: bool) -> None:
    """One registered model with its versions and alias history."""
    from registry import catalog, tables

    out = catalog.describe(_model(precision, model))
    echo_json(out) if as_json else tables.print_show(out)
