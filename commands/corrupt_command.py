"""``cifar10 data corrupt``: seeded CIFAR-10-C-style corrupted copies of the prepared test images."""

from __future__ import annotations

from pathlib import Path

import click

from commands.main import common_options, echo_json, settings

FOLDER = click.Path(file_okay=False, path_type=Path)


@click.command(short_help="Seeded CIFAR-10-C-style corrupted copies of the test images.")
@common_options
@click.option("--data", "prepared", type=FOLDER, default=Path("data/prepared"), show_default=True)
@click.option(
    "--out", type=FOLDER, default=Path("data/corrupted"), show_default=True,
    help="one image folder per corruption and severity: <out>/<kind>-<severity>/<class>/",
)  # fmt: skip
@click.option(
    "--kinds", default="all", show_default=True,
    help="comma list of gaussian_noise, blur, contrast, brightness, jpeg, pixelate",
)  # fmt: skip
@click.option("--severities", default="all", show_default=True, help="comma list of mild, medium, strong")
@click.option("--images", type=click.IntRange(min=0), default=0, help="class-balanced test images (0: all)")
@click.option("--seed", type=int, default=0, show_default=True)
def corrupt(
    params_file: Path, profile: str | None, sets: tuple[str, ...], prepared: Path, out: Path,
    kinds: str, severities: str, images: int, seed: int,
) -> None:  # fmt: skip
    """Write shifted copies of the prepared test split: noise, blur, contrast, brightness, JPEG and
    pixelation at three severities, seeded, encoded like the source files.

    Each folder is a labelled image folder: score it through the server with
    `cifar10 client evaluate --images <out>/blur-strong`, or watch `cifar10 monitor status` while
    sending it.

    \b
    Examples:
      cifar10 data corrupt --images 500
      cifar10 data corrupt --kinds blur,pixelate --severities strong
    """
    import numpy as np

    from common.exit_codes import UsageError
    from common.scored_split import balanced_subset
    from training.corruptions import KINDS, SEVERITIES, encoding_of, write_folder

    classes = settings(params_file, profile, sets).data.classes
    chosen = list(KINDS) if kinds == "all" else [k.strip() for k in kinds.split(",") if k.strip()]
    levels = (
        list(SEVERITIES) if severities == "all" else [s.strip() for s in severities.split(",") if s.strip()]
    )
    unknown = sorted(set(chosen) - set(KINDS)) + sorted(set(levels) - set(SEVERITIES))
    if unknown:
        raise UsageError(f"unknown corruption or severity: {', '.join(unknown)}")
    x, y = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    rows = balanced_subset(y, images, seed=seed)
    first = next((p for p in sorted((prepared / "test_images").rglob("*")) if p.is_file()), None)
    encoding = encoding_of([first.read_bytes()]) if first else ("PNG", 0)
    written = {
        f"{kind}-{level}": write_folder(x[rows], y[rows], classes, out, kind, level, seed, encoding)
        for kind in chosen
        for level in levels
    }
    echo_json({"out": str(out), "encoding": list(encoding), "sets": written}, indent=None)
