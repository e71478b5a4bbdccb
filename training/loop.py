"""The epoch loop that both the ``train`` stage and a tuning trial run: one recipe, two callers.

Each epoch gets a loader seeded from ``train.seed + epoch`` (so a resumed run draws the same
batches an uninterrupted one would), the warm-up + cosine schedule is laid out over all epochs of
the run, and after every epoch the caller's ``after_epoch`` decides what to record and whether to
stop. What differs between callers (checkpoints and MLflow for ``train``, pruning for a trial)
lives in that callback, not in a second copy of the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from common.params import TrainConfig
from training.engine import build_optimizer, lr_factor, train_epoch


@dataclass(frozen=True)
class EpochEnd:
    """What the loop knows when an epoch ends: epochs done (1-based), the global step, its stats."""

    epoch: int
    step: int
    stats: dict[str, float]


def steps_per_epoch(n_images: int, batch_size: int, world: int = 1) -> int:
    """Optimiser steps per epoch on each rank (``batch_size`` is the global batch)."""
    per_rank = max(1, batch_size // world)
    return -(-n_images // (per_rank * world))


def fit_epochs(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    after_epoch: Callable[[EpochEnd], bool],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    start_step: int = 0,
    world: int = 1,
    desc: str = "epoch",
    show_progress: bool = True,
) -> int:
    """Train ``model`` from ``start_epoch`` to ``cfg.epochs``; returns the epochs done.

    ``after_epoch`` runs after each epoch and returns True to stop there (an interruption, a
    pruned trial). ``model`` may be a DDP wrapper; under ``world > 1`` each rank sees its shard.
    """
    optimizer = optimizer or build_optimizer(model, cfg)
    per_rank_batch = max(1, cfg.batch_size // world)
    per_epoch = steps_per_epoch(len(dataset), cfg.batch_size, world)
    total, warmup = cfg.epochs * per_epoch, int(cfg.warmup_epochs * per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.amp == "fp16")
    step, epoch = start_step, start_epoch
    while epoch < cfg.epochs:
        torch.manual_seed(cfg.seed + epoch)  # augmentation/dropout RNG: identical with or without resume
        sampler = DistributedSampler(dataset, seed=cfg.seed, drop_last=False) if world > 1 else None
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=per_rank_batch,
            shuffle=sampler is None,
            sampler=sampler,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            drop_last=False,
        )
        stats = train_epoch(
            model,
            loader,
            optimizer,
            lambda s: cfg.lr * lr_factor(s, warmup, total),
            step,
            scaler,
            cfg,
            device,
            f"{desc} {epoch + 1}/{cfg.epochs}",
            show_progress,
        )
        stats["images_per_s"] *= world
        step += len(loader)
        epoch += 1
        if after_epoch(EpochEnd(epoch, step, stats)):
            break
    return epoch
