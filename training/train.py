"""The ``train`` stage: resumable, seeded training of a WideResNet, tracked in MLflow.

Runs single-process or under ``torchrun`` (DDP; ``train.batch_size`` is the global batch). Each
epoch ends with a checkpoint; a rerun with the same configuration continues from the last complete
epoch and reaches the same weights an uninterrupted run would.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from common import tracking
from common.fsutil import atomic_path, write_json
from common.params import Params
from training.augment import ArrayDataset, balanced_subset, train_transform
from training.checkpoint import load_checkpoint, model_metadata, save_checkpoint, save_weights
from training.engine import build_optimizer, predict_logits
from training.loop import EpochEnd, fit_epochs
from training.model import WideResNet, count_parameters
from training.prepare import data_hash, load_arrays

log = logging.getLogger(__name__)
LOG_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s")


def _setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def fingerprint(params: Params, data_digest: str) -> str:
    """Identifies what a checkpoint was trained for, so a changed config never resumes a stale one."""
    blob = json.dumps(
        {
            "model": dataclasses.asdict(params.model),
            "train": dataclasses.asdict(params.train),
            "data": data_digest,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _start_run(params: Params, run_id: str | None, digest: str, n_params: int, n_train: int, source: str):
    import mlflow

    tracking.ensure_experiment(params.mlflow.experiment)
    mlflow.set_experiment(params.mlflow.experiment)
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else f"train-{params.profile}")
    if run_id is None:
        flat = {f"model.{k}": v for k, v in dataclasses.asdict(params.model).items()}
        flat |= {f"train.{k}": v for k, v in dataclasses.asdict(params.train).items()}
        flat |= {
            "profile": params.profile,
            "data.source": source,
            "data.val_per_class": params.data.val_per_class,
            "n_train_images": n_train,
        }
        mlflow.log_params(flat)
        mlflow.set_tags(
            {
                "mlflow.source.git.commit": tracking.git_commit(),
                "git_commit": tracking.git_commit(),
                "data_hash": digest,
                "num_parameters": str(n_params),
                "stage": "train",
            }
        )
    return run


def train(
    params: Params,
    prepared: Path,
    model_out: Path,
    checkpoint_dir: Path,
    log_csv: Path,
    run_file: Path,
    stop_after_epochs: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Train per ``params`` on ``prepared`` data; returns the final summary (also in ``run_file``).

    ``stop_after_epochs`` ends the process early as an interruption would, for resume tests.
    """
    cfg, data = params.train, params.data
    rank, world, device = _setup_distributed()
    train_x, train_y, val_x, val_y = load_arrays(prepared, "train_x", "train_y", "val_x", "val_y")
    idx = balanced_subset(train_y, cfg.train_subset, cfg.seed)
    dataset = ArrayDataset(train_x[idx], train_y[idx], train_transform(cfg, data))
    digest = data_hash(prepared)
    fp = fingerprint(params, digest)

    torch.manual_seed(cfg.seed)
    model = WideResNet(params.model.depth, params.model.width, len(data.classes), params.model.dropout).to(
        device
    )
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    optimizer = build_optimizer(model, cfg)
    meta = model_metadata(params.model.depth, params.model.width, data.classes, data.mean, data.std)

    state = {"epoch": 0, "step": 0, "history": [], "fingerprint": fp, "run_id": None}
    if (checkpoint_dir / "state.json").exists():
        saved = json.loads((checkpoint_dir / "state.json").read_text())
        if saved.get("fingerprint") == fp:
            state = load_checkpoint(checkpoint_dir, model, optimizer)
            if rank == 0:
                log.info("resuming from %s after epoch %d", checkpoint_dir, state["epoch"])
        elif rank == 0:
            log.warning("checkpoint in %s is for another configuration; starting afresh", checkpoint_dir)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    def after_epoch(end: EpochEnd) -> bool:
        state["step"], state["epoch"] = end.step, end.epoch
        if rank == 0:
            logits = predict_logits(model, val_x, data, device, cfg.eval_batch_size)
            val_loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_y)).item()
            row = {
                "epoch": end.epoch,
                **end.stats,
                "val_loss": val_loss,
                "val_acc": float((logits.argmax(1) == val_y).mean()),
            }
            state["history"].append(row)
            save_checkpoint(checkpoint_dir, model, optimizer, state, meta)
            import mlflow

            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=end.epoch)
            log.info("epoch %d: %s", end.epoch, {k: round(v, 4) for k, v in row.items()})
        if world > 1:
            dist.barrier()
        return stop_after_epochs is not None and end.epoch >= stop_after_epochs

    run = None
    if rank == 0:
        source = json.loads((prepared / "meta.json").read_text())["source"]
        run = _start_run(params, state.get("run_id"), digest, count_parameters(model), len(dataset), source)
        state["run_id"] = run.info.run_id
    try:
        if stop_after_epochs is None or state["epoch"] < stop_after_epochs:
            fit_epochs(
                net,
                dataset,
                cfg,
                device,
                after_epoch,
                optimizer=optimizer,
                start_epoch=state["epoch"],
                start_step=state["step"],
                world=world,
                show_progress=show_progress and rank == 0,
            )
        if state["epoch"] < cfg.epochs:
            return {"interrupted_after_epoch": state["epoch"], "run_id": state["run_id"]}
        if rank != 0:
            return {}
        save_weights(model, model_out, meta)
        _write_log(log_csv, state["history"])
        import mlflow

        mlflow.log_artifact(str(model_out), "model")
        mlflow.log_dict(params.raw, "params.yaml")
        summary = {
            "run_id": state["run_id"],
            "profile": params.profile,
            "epochs": cfg.epochs,
            "num_parameters": count_parameters(model),
            "data_hash": digest,
            "final": state["history"][-1] if state["history"] else {},
            "mean_images_per_s": float(np.mean([h["images_per_s"] for h in state["history"]])),
        }
        write_json(run_file, summary)
        return summary
    finally:
        if run is not None:
            import mlflow

            mlflow.end_run()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row[k] for k in LOG_FIELDS})
