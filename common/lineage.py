"""Which data a run used, in MLflow's terms: the prepared splits as datasets with their digests.

The ``prepare`` stage writes ``meta.json`` with the SHA-256 of every array it wrote. A split's
dataset digest is derived from those checksums alone (16 hex digits), so the training run, the
evaluation run and the export run name the same test split with the same digest without reading a
pixel, and a changed split changes it. A *scored part* of a split (the rows the export gates or
scores a form on) is a dataset of its own, named by :func:`common.scored_split.digest` of exactly
those rows - the digest the release gate compares.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

SPLITS = ("train", "val", "test")
NAMES = {"train": "cifar10-train", "val": "cifar10-validation", "test": "cifar10-test"}
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def split_digest(prepared: Path, split: str) -> str:
    """16 hex digits over the recorded checksums of ``<split>_x.npy`` and ``<split>_y.npy``."""
    sha = json.loads((Path(prepared) / "meta.json").read_text())["sha256"]
    pair = {k: sha[k] for k in (f"{split}_x.npy", f"{split}_y.npy")}
    return hashlib.sha256(json.dumps(pair, sort_keys=True).encode()).hexdigest()[:16]


def _source(prepared: Path):
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    origin = json.loads((Path(prepared) / "meta.json").read_text()).get("source", "")
    uri = OFFICIAL_URL if origin in ("", "cifar10") else origin
    with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local path is local
        warnings.simplefilter("ignore")
        return resolve_dataset_source(uri)


def split_dataset(prepared: Path, split: str):
    """One prepared split as an MLflow dataset (its source: the download URL or the image folder)."""
    return rows_dataset(prepared, NAMES[split], split_digest(prepared, split))


def rows_dataset(prepared: Path, name: str, digest: str):
    """A named set of rows of a prepared split, identified by ``digest``."""
    import numpy as np
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.schema import Schema, TensorSpec

    schema = Schema(
        [
            TensorSpec(np.dtype("uint8"), (-1, 32, 32, 3), "images"),
            TensorSpec(np.dtype("int64"), (-1,), "labels"),
        ]
    )
    return MetaDataset(_source(prepared), name=name, digest=digest, schema=schema)


def log_splits(prepared: Path, splits: dict[str, str]) -> None:
    """``mlflow.log_input`` of each named split (``{"train": "training", ...}``) on the active run."""
    import mlflow

    for split, context in splits.items():
        mlflow.log_input(split_dataset(prepared, split), context=context)
