"""One trial: a short training run of the drawn settings, judged on validation accuracy each epoch.

It is the ``train`` stage's recipe (same model, augmentation, optimiser, warm-up and cosine
schedule, laid out for the trial's epochs) on a class-balanced part of the training split, scored
on a class-balanced part of the validation split after every epoch. Each score is reported to
Optuna, whose pruner may stop the trial there, and logged to the trial's MLflow run. The test split
is never looked at: choosing settings on it would make its accuracy an optimistic estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from common.params import Params
from training.augment import ArrayDataset, balanced_subset, train_transform
from training.engine import predict_logits
from training.loop import EpochEnd, fit_epochs
from training.model import WideResNet

log = logging.getLogger(__name__)


class Pruned(Exception):
    """The pruner stopped the trial after ``epoch`` (raised as ``optuna.TrialPruned`` by the caller)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


@dataclass(frozen=True)
class TrialData:
    """The trial's training subset and validation subset (uint8 N×32×32×3 and labels)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray

    @classmethod
    def pick(cls, arrays: tuple[np.ndarray, ...], train_subset: int, val_images: int, seed: int) -> TrialData:
        train_x, train_y, val_x, val_y = arrays
        t, v = balanced_subset(train_y, train_subset, seed), balanced_subset(val_y, val_images, seed + 1)
        return cls(train_x[t], train_y[t], val_x[v], val_y[v])


def fit(
    params: Params,
    data: TrialData,
    epochs: int,
    report: Callable[[int, float], bool],
    log_epoch: Callable[[int, dict], None] = lambda epoch, row: None,
) -> float:
    """Train for ``epochs``; after each, ``report(epoch, val_acc)`` returns whether to prune.

    The answer after the last epoch is ignored: stopping then saves nothing, and the trial's
    settings did produce a finished model with that accuracy.

    Returns the last epoch's validation accuracy (the schedule ends there, so it is the model the
    settings produce in this budget). Raises :class:`Pruned` when ``report`` says so.
    """
    # Trials are judged epoch by epoch on the step schedule: a wall-clock budget would make pruning
    # depend on the machine's speed.
    cfg = params.train.replace(epochs=epochs, max_minutes=0.0)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = WideResNet(params.model.depth, params.model.width, len(params.data.classes), params.model.dropout)
    model = model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    dataset = ArrayDataset(data.train_x, data.train_y, train_transform(cfg, params.data))
    scores: list[float] = []

    def after_epoch(end: EpochEnd) -> bool:
        logits = predict_logits(model, data.val_x, params.data, device, cfg.eval_batch_size)
        scores.append(float((logits.argmax(1) == data.val_y).mean()))
        log_epoch(end.epoch, {**end.stats, "val_acc": scores[-1]})
        # Pruning saves the epochs still to come; a trial that has run them all is complete.
        if report(end.epoch, scores[-1]) and end.epoch < epochs:
            raise Pruned(end.epoch)
        return False

    fit_epochs(model, dataset, cfg, device, after_epoch, desc="trial epoch", show_progress=False)
    return scores[-1]
