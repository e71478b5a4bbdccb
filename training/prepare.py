"""The ``prepare`` stage: raw CIFAR-10 -> compact arrays, a validation split and a test image folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import numpy as np

from common.fsutil import atomic_dir, sha256_file
from common.params import DataConfig
from training.sources import (
    OFFICIAL_MD5,
    OFFICIAL_URL,
    ArchiveLimits,
    DataError,
    Split,
    download,
    load_image_folder,
    load_official,
)


class PreparedMeta(TypedDict):
    """``meta.json`` of a prepared folder, as :func:`prepare` writes and returns it."""

    source: str
    classes: list[str]
    counts: dict[str, int]
    val_class_distribution: list[float]
    sha256: dict[str, str]


ARRAYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def stratified_split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with exactly ``per_class`` validation images of each class, seeded."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class:
            raise DataError(
                f"class {c} has {len(idx)} training images, too few for {per_class} validation ones"
            )
        val.append(rng.choice(idx, size=per_class, replace=False))
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def load_source(
    source: str, classes: tuple[str, ...], cache_dir: Path, limits: ArchiveLimits | None = None
) -> tuple[Split, Split]:
    """Resolve ``source`` ("cifar10" or a local path) to the train and test splits."""
    if source == "cifar10":
        archive = download(OFFICIAL_URL, cache_dir / "cifar-10-python.tar.gz", OFFICIAL_MD5)
        return load_official(archive, classes)
    return load_image_folder(Path(source).expanduser(), classes, limits)


def prepare(cfg: DataConfig, out_dir: Path, cache_dir: Path = Path("data/raw")) -> PreparedMeta:
    """Build ``out_dir`` atomically and return its summary (also written to ``meta.json``).

    Layout: ``{train,val,test}_{x,y}.npy`` (uint8 N×32×32×3 and int64 labels), ``meta.json`` and
    ``test_images/<class>/NNNN.<ext>`` holding the test images as encoded files, which is what the
    client and offline evaluation send to the server.
    """
    source = cfg.source  # the CLI applies the CIFAR10_SOURCE override; a caller's config is taken as is
    limits = ArchiveLimits(cfg.archive_max_bytes, cfg.archive_max_files)
    train, test = load_source(source, cfg.classes, cache_dir, limits)
    train_idx, val_idx = stratified_split(train.labels, cfg.val_per_class, cfg.seed)
    arrays = {
        "train_x": train.images[train_idx],
        "train_y": train.labels[train_idx],
        "val_x": train.images[val_idx],
        "val_y": train.labels[val_idx],
        "test_x": test.images,
        "test_y": test.labels,
    }
    n = len(cfg.classes)
    with atomic_dir(out_dir) as tmp:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        counters = [0] * n
        for (suffix, data), label in zip(test.encoded or [], test.labels, strict=True):
            folder = tmp / "test_images" / cfg.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{counters[label]:04d}{suffix}").write_bytes(data)
            counters[label] += 1
        val_counts = np.bincount(arrays["val_y"], minlength=n)
        meta = {
            "source": source if source == "cifar10" else str(Path(source).resolve()),
            "classes": list(cfg.classes),
            "counts": {k[:-2]: len(v) for k, v in arrays.items() if k.endswith("_y")},
            "val_class_distribution": (val_counts / val_counts.sum()).round(6).tolist(),
            "sha256": {f"{k}.npy": sha256_file(tmp / f"{k}.npy") for k in ARRAYS},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def data_hash(prepared: Path) -> str:
    """One digest for the prepared data, recorded with every run so results trace back to data."""
    import hashlib

    meta = json.loads((prepared / "meta.json").read_text())
    return hashlib.sha256(json.dumps(meta["sha256"], sort_keys=True).encode()).hexdigest()[:16]


def load_arrays(prepared: Path, *names: str) -> list[np.ndarray]:
    return [np.load(prepared / f"{name}.npy") for name in names]
