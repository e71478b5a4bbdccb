"""Optimiser, schedule, one training epoch and batched inference: the parts the loop is made of."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from common.exit_codes import Failed
from common.params import DataConfig, TrainConfig
from training.augment import normalize_batch


class TrainingDiverged(Failed, FloatingPointError):
    """The loss went NaN or infinite: the run's result is bad, not its usage (exit code 1)."""


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """Nesterov SGD; weight decay on conv/linear weights only (not BatchNorm parameters or biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from ~0 to 1, then cosine decay to 0, evaluated per optimiser step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; on the CPU training stays in fp32 whatever ``amp`` says."""
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def train_epoch(
    model: nn.Module,
    loader,
    optimizer,
    lr_at: Callable[[int], float],
    step: int,
    scaler,
    cfg: TrainConfig,
    device: torch.device,
    desc: str,
    show_progress: bool = True,
    stop: Callable[[int], bool] | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` starting at global ``step``; returns loss, accuracy, lr, images/s, steps.

    The learning rate is set from the global step before every update rather than kept in a
    scheduler object, so a resumed run needs nothing but the step count to be exactly on schedule.
    ``stop(step)`` ends the pass early (a time budget that ran out); ``on_step`` runs after every
    update (the weight EMA). Loss and accuracy are summed on
    the device and read back every ``SYNC_EVERY`` steps, not every step: each read waits for the GPU.
    """
    model.train()
    memory_format = (
        torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format
    )
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, first, lr = 0, step, cfg.lr
    start = time.perf_counter()
    # disable=None: a bar on a terminal, silence in CI logs
    bar = tqdm(loader, desc=desc, leave=False, disable=None if show_progress else True, mininterval=1.0)
    for x, y in bar:
        if stop is not None and stop(step):
            break
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        lr = lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if on_step is not None:
            on_step()
        step += 1
        n = y.numel()
        total_loss += loss.detach().float() * n
        correct += (logits.argmax(1) == y).sum()
        seen += n
        if (step - first) % SYNC_EVERY == 0 or device.type == "cpu":
            _check_finite(total_loss, desc)
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", lr=f"{lr:.4f}", img_s=f"{rate:.0f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    _check_finite(total_loss, desc)
    return {
        "train_loss": total_loss.item() / max(seen, 1),
        "train_acc": correct.item() / max(seen, 1),
        "lr": lr,
        "images_per_s": seen / max(elapsed, 1e-9),
        "steps": step - first,
    }


SYNC_EVERY = 50


def _check_finite(total_loss: torch.Tensor, desc: str) -> None:
    if not torch.isfinite(total_loss):
        raise TrainingDiverged(f"non-finite training loss ({desc}); lower train.lr")


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: np.ndarray,
    data: DataConfig,
    device: torch.device,
    batch_size: int = 500,
    tta_flip: bool = False,
) -> np.ndarray:
    """Logits for uint8 N×32×32×3 images; with ``tta_flip`` the mirrored image's logits are added."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize_batch(images[i : i + batch_size], data).to(device)
        logits = model(x).float()
        if tta_flip:
            logits = logits + model(torch.flip(x, dims=[3])).float()
        out.append(logits.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
