"""A folder of images as MLflow's scoring input, for ``mlflow models predict`` and ``serve``.

MLflow's scoring protocol carries a DataFrame as JSON (``dataframe_split``); a ``binary`` column
travels base64-encoded and MLflow decodes it against the model's signature. This writes exactly that
(through ``mlflow.models.convert_input_example_to_serving_input``) for every PNG/JPEG under a folder,
in sorted path order, so the answers line up with the files::

    cifar10 registry serving-input data/prepared/test_images --out input.json
    mlflow models predict -m models:/cifar10-wrn-fp32@production -i input.json -t json \\
        --env-manager local
"""

from __future__ import annotations

from pathlib import Path

from mlmodel.signatures import IMAGE_COLUMN

SUFFIXES = {".png", ".jpg", ".jpeg"}


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no PNG or JPEG files")
    return files


def serving_input(files: list[Path]) -> str:
    """The scoring-protocol JSON of the files' bytes, one row each, in the given order."""
    import pandas as pd
    from mlflow.models import convert_input_example_to_serving_input

    return convert_input_example_to_serving_input(
        pd.DataFrame({IMAGE_COLUMN: [p.read_bytes() for p in files]})
    )
