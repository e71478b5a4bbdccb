"""Datasets over the prepared uint8 arrays and the torchvision transforms of the recipe."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from common.params import DataConfig, TrainConfig
from common.scored_split import balanced_subset  # noqa: F401 - re-exported: the stages import it here


def train_transform(cfg: TrainConfig, data: DataConfig) -> v2.Compose:
    """Crop (reflect-padded) + flip, optional TrivialAugmentWide, normalise, optional Cutout.

    Cutout is ``RandomErasing`` with a fixed square of ``cutout`` pixels filled with 0 after
    normalisation (that is, with the dataset mean), as in DeVries & Taylor (2017); unlike their
    version the square always lies fully inside the image.
    """
    ops: list[v2.Transform] = []
    if cfg.crop_padding > 0:
        ops.append(v2.RandomCrop(32, padding=cfg.crop_padding, padding_mode="reflect"))
    if cfg.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if cfg.trivial_augment:
        ops.append(v2.TrivialAugmentWide())
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.mean), list(data.std))]
    if cfg.cutout > 0:
        area = (cfg.cutout / 32) ** 2
        ops.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0))
    return v2.Compose(ops)


def eval_transform(data: DataConfig) -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(data.mean), list(data.std))])


def normalize_batch(images: np.ndarray, data: DataConfig) -> torch.Tensor:
    """uint8 N×H×W×3 -> normalised float N×3×H×W, the exact input contract of every exported model."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(data.mean).view(1, 3, 1, 1)
    std = torch.tensor(data.std).view(1, 3, 1, 1)
    return (x - mean) / std


class ArrayDataset(Dataset):
    """uint8 N×32×32×3 images plus labels; the transform sees a 3×32×32 uint8 tensor."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: v2.Transform) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]
