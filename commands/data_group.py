"""``cifar10 data prepare|corrupt``: the prepared arrays and test images, and shifted copies of them."""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from commands.main import common_options, echo_json, settings

FOLDER = click.Path(file_okay=False, path_type=Path)


class _DataGroup(click.Group):
    """``corrupt`` lives in its own module, loaded only when asked for: ``prepare`` (a DVC stage)
    then never imports the corruption code, so editing it does not re-run the pipeline."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), "corrupt"])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "corrupt":
            return importlib.import_module("commands.corrupt_command").corrupt
        return super().get_command(ctx, name)


@click.group(cls=_DataGroup)
def data() -> None:
    """Prepare the data the pipeline trains and tests on."""


@data.command()
@common_options
@click.option(
    "--out", type=FOLDER, default=Path("data/prepared"), show_default=True,
    help="the prepared folder (written atomically).",
)  # fmt: skip
@click.option(
    "--cache", type=FOLDER, default=Path("data/raw"), show_default=True, help="where the archive is kept."
)  # fmt: skip
def prepare(params_file: Path, profile: str | None, sets: tuple[str, ...], out: Path, cache: Path) -> None:
    """Arrays, a stratified validation split and a test image folder from data.source.

    data.source is "cifar10" (the official archive, MD5-checked) or a local archive or folder;
    $CIFAR10_SOURCE overrides it.
    """
    from training.prepare import prepare as prepare_data

    meta = prepare_data(settings(params_file, profile, sets).data, out, cache)
    echo_json({"source": meta["source"], "counts": meta["counts"]}, indent=None)
