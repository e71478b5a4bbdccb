"""Shared fixtures: where the offline mirror and reference weights are, and small synthetic data."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CIFAR10_SHARED", ROOT.parent / "shared"))
MIRROR = SHARED / "data" / "cifar10-jpeg.tar.gz"
REFERENCE = SHARED / "models" / "wrn28_10_cifar10_jpeg.fp16.safetensors"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_image_folder(root: Path, per_class: dict[str, int], classes=CLASSES, size=(32, 32), seed=0) -> Path:
    """``root/{train,test}/<class>/NNNN.png``: each class a noisy tint, so tiny models can learn it."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(c * 25) % 256, (c * 70) % 256, (255 - c * 25) % 256], dtype=np.float32)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, (*size[::-1], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:04d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "src", {"train": 12, "test": 3})


@pytest.fixture
def isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private sqlite MLflow store, so tests never touch the user's runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not MIRROR.exists():
        pytest.skip(f"offline CIFAR-10 mirror not found at {MIRROR} (set CIFAR10_SHARED)")
    return MIRROR


@pytest.fixture(scope="session")
def reference_weights() -> Path:
    if not REFERENCE.exists():
        pytest.skip(f"reference weights not found at {REFERENCE} (set CIFAR10_SHARED)")
    return REFERENCE


@pytest.fixture(scope="session")
def prepared_mirror(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mirror run through the project's own ``prepare`` stage, once per test session."""
    from common.config import DataConfig
    from training.prepare import prepare

    out = tmp_path_factory.mktemp("mirror") / "prepared"
    prepare(DataConfig(source=str(mirror)), out)
    return out


def tar_folder(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname="cifar-like")
    return dest
