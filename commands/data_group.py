"""``cifar10 data prepare``: CIFAR-10 (or an image folder) as arrays, a stratified split and test images."""

from __future__ import annotations

from pathlib import Path

import click

from commands.main import common_options, echo_json, settings

FOLDER = click.Path(file_okay=False, path_type=Path)


@click.group()
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
