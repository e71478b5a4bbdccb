"""The epoch loop that both the ``train`` stage and a tuning trial run: one recipe, two callers.

Each epoch gets a loader seeded from ``train.seed + epoch`` (so a resumed run draws the same
batches an uninterrupted one would), the warm-up + cosine schedule is laid out over the run, and
after every epoch the caller's ``after_epoch`` decides what to record and whether to stop. What
differs between callers (checkpoints and MLflow for ``train``, pruning for a trial) lives in that
callback, not in a second copy of the loop.

**A time budget** (``train.max_minutes`` > 0) lays the cosine out over training time (the epochs'
wall time, without the validation and checkpoint after each) as well as over ``train.epochs``:
after the linear warm-up, the schedule's progress is the larger of "steps done of all epochs" and
"time spent of the budget", and training ends when it reaches 1. So the learning rate reaches zero
exactly when the budget runs out (mid-epoch if need be) and the result is a finished model, not an
interrupted one; ``epochs`` is then an upper bound. Without a budget the schedule is the
step-based one, so seeded runs stay bit-for-bit reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from common.params import TrainConfig
from training.engine import build_optimizer, lr_factor, train_epoch


@dataclass(frozen=True)
class EpochEnd:
    """What the loop knows when an epoch ends: epochs done (1-based), the global step, its stats.

    ``clock`` is the schedule's state (seconds trained, when warm-up ended) for a checkpoint, and
    ``finished`` says the schedule has reached its end (all epochs, or the budget).
    """

    epoch: int
    step: int
    stats: dict[str, float]
    clock: dict[str, float] = field(default_factory=dict)
    finished: bool = False


class Schedule:
    """Linear warm-up, then cosine to zero over steps or over the time budget, whichever ends first."""

    def __init__(
        self, cfg: TrainConfig, per_epoch: int, clock: dict[str, float] | None = None, world: int = 1
    ):
        self.total, self.warmup = cfg.epochs * per_epoch, int(cfg.warmup_epochs * per_epoch)
        self.budget = cfg.max_minutes * 60.0 if cfg.max_minutes > 0 else math.inf
        clock = clock or {}
        self.origin = time.perf_counter() - clock.get("elapsed_s", 0.0)
        self.warm_end: float | None = clock.get("warmup_end_s")
        self.sync = world > 1 and math.isfinite(self.budget)  # ranks must agree on when time is up

    def elapsed(self) -> float:
        seconds = time.perf_counter() - self.origin
        if self.sync:  # the slowest rank's clock decides, so every rank stops at the same step
            import torch.distributed as dist

            t = torch.tensor([seconds], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            seconds = float(t.item())
        return seconds

    def progress(self, step: int) -> float:
        by_steps = (step - self.warmup) / max(1, self.total - self.warmup)
        if not math.isfinite(self.budget) or self.warm_end is None:
            return by_steps
        by_time = (self.elapsed() - self.warm_end) / max(1e-9, self.budget - self.warm_end)
        return max(by_steps, by_time)

    def lr_factor(self, step: int) -> float:
        if not math.isfinite(self.budget):
            return lr_factor(step, self.warmup, self.total)  # the step-based schedule, exactly
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.warm_end is None:
            self.warm_end = self.elapsed()
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, self.progress(step))))

    def done(self, step: int) -> bool:
        if step >= self.total:
            return True
        return math.isfinite(self.budget) and self.elapsed() >= self.budget

    def state(self) -> dict[str, float]:
        out = {"elapsed_s": time.perf_counter() - self.origin}
        return out | ({"warmup_end_s": self.warm_end} if self.warm_end is not None else {})


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
    clock: dict[str, float] | None = None,
    world: int = 1,
    desc: str = "epoch",
    show_progress: bool = True,
    on_step: Callable[[], None] | None = None,
) -> EpochEnd | None:
    """Train ``model`` from ``start_epoch`` until the schedule ends; returns the last epoch's end.

    ``after_epoch`` runs after each epoch (a partial last one under a budget) and returns True to
    stop there (an interruption, a pruned trial). ``model`` may be a DDP wrapper; under
    ``world > 1`` each rank sees its shard. ``clock`` resumes a budgeted schedule's time.
    """
    optimizer = optimizer or build_optimizer(model, cfg)
    per_rank_batch = max(1, cfg.batch_size // world)
    schedule = Schedule(cfg, steps_per_epoch(len(dataset), cfg.batch_size, world), clock, world)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.amp == "fp16")
    step, epoch, end = start_step, start_epoch, None
    while epoch < cfg.epochs and not schedule.done(step):
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
            lambda s: cfg.lr * schedule.lr_factor(s),
            step,
            scaler,
            cfg,
            device,
            f"{desc} {epoch + 1}/{cfg.epochs}",
            show_progress,
            stop=schedule.done if math.isfinite(schedule.budget) else None,
            on_step=on_step,
        )
        steps = int(stats.pop("steps"))
        if steps == 0:  # the budget ran out before this epoch's first step: the previous one is last
            break
        stats["images_per_s"] *= world
        step += steps
        epoch += 1
        clock = schedule.state()
        stats["elapsed_s"] = clock["elapsed_s"]
        end = EpochEnd(epoch, step, stats, clock, schedule.done(step) or epoch >= cfg.epochs)
        paused = time.perf_counter()
        stop = after_epoch(end)
        schedule.origin += time.perf_counter() - paused  # validation and checkpoints are not training time
        if stop:
            break
    if end is not None and not end.finished and schedule.done(step):  # time ran out between epochs
        end = dataclasses.replace(end, finished=True, clock=schedule.state())
    return end
