import numpy as np
import torch

from common.params import DataConfig, TrainConfig
from training.augment import ArrayDataset, balanced_subset, eval_transform, normalize_batch, train_transform

DATA = DataConfig()


def _images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_full_recipe_transform_gives_normalised_float_tensors():
    cfg = TrainConfig(trivial_augment=True, cutout=16)
    ds = ArrayDataset(_images(), np.arange(8) % 10, train_transform(cfg, DATA))
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert int(y) == 3


def test_cutout_blanks_a_16_pixel_square_to_the_mean():
    cfg = TrainConfig(crop_padding=0, hflip=False, cutout=16)
    img = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    out = train_transform(cfg, DATA)(img)
    zero = (out == 0).all(dim=0)
    assert int(zero.sum()) == 256
    rows, cols = torch.nonzero(zero, as_tuple=True)
    assert int(rows.max() - rows.min()) == 15 and int(cols.max() - cols.min()) == 15


def test_without_augmentation_train_equals_eval_transform():
    cfg = TrainConfig().replace(crop_padding=0, hflip=False, trivial_augment=False, cutout=0)
    img = torch.from_numpy(_images(1)[0]).permute(2, 0, 1)
    assert torch.equal(train_transform(cfg, DATA)(img), eval_transform(DATA)(img))


def test_normalize_batch_matches_the_eval_transform():
    imgs = _images(4)
    batch = normalize_batch(imgs, DATA)
    single = eval_transform(DATA)(torch.from_numpy(imgs[2]).permute(2, 0, 1))
    assert torch.allclose(batch[2], single, atol=1e-6)


def test_balanced_subset_is_stratified_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    a = balanced_subset(labels, 100, seed=1)
    assert np.bincount(labels[a]).tolist() == [10] * 10
    assert np.array_equal(a, balanced_subset(labels, 100, seed=1))
    assert len(balanced_subset(labels, 0, seed=1)) == 500
