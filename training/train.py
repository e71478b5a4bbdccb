"""The ``train`` stage: resumable, seeded training of a WideResNet, tracked in MLflow.

Runs single-process or under ``torchrun`` (DDP; ``train.batch_size`` is the global batch). Each
epoch ends with a checkpoint; a rerun with the same configuration continues from the last complete
epoch and reaches the same weights an uninterrupted run would.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from common import lineage, tracking
from common.fsutil import atomic_path, write_json
from common.params import Params
from common.run_folder import RunFolder, RunRecorder
from training.augment import ArrayDataset, balanced_subset, train_transform
from training.checkpoint import load_checkpoint, model_metadata, save_checkpoint, save_weights
from training.engine import build_optimizer, predict_logits
from training.loop import EpochEnd, fit_epochs
from training.model import WideResNet, count_parameters
from training.prepare import data_hash, load_arrays


class TrainSummary(TypedDict):
    """``artifacts/train/run.json``: what :func:`train` returns and later stages read."""

    run_id: str | None
    run_folder: str
    profile: str
    epochs: int
    num_parameters: int
    data_hash: str
    final: dict[str, float]
    train_seconds: float
    mean_images_per_s: float


log = logging.getLogger(__name__)
LOG_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "elapsed_s")


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
            "model": params.model.model_dump(mode="json"),
            "train": params.train.model_dump(mode="json"),
            "data": data_digest,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _run_params(params: Params, n_train: int, source: str) -> dict:
    flat = {f"model.{k}": v for k, v in params.model.model_dump(mode="json").items()}
    flat |= {f"train.{k}": v for k, v in params.train.model_dump(mode="json").items()}
    return flat | {
        "profile": params.profile,
        "data.source": source,
        "data.val_per_class": params.data.val_per_class,
        "n_train_images": n_train,
    }


def _set_aside(folder: Path) -> None:
    """Remove a previous run's folder, unless MLflow never received that run: then keep it aside."""
    meta_file = folder / "run.json"
    if not meta_file.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        return
    meta = json.loads(meta_file.read_text())
    if meta.get("mirrored") or meta.get("imported"):
        shutil.rmtree(folder, ignore_errors=True)
    else:
        aside = folder.with_name(f"{folder.name}.{meta.get('id', 'old')}")
        log.warning(
            "%s holds a run MLflow never received; kept as %s (cifar10 registry import-run)", folder, aside
        )
        folder.rename(aside)


def _open_record(
    params: Params, folder: Path, run_id: str | None, digest: str, n_params: int, flat: dict, prepared: Path
):
    """The run folder, mirrored to a (new or resumed) MLflow run when MLflow is installed and answers."""
    run_tags = {
        "git_commit": tracking.git_commit(),
        "data_hash": digest,
        "num_parameters": str(n_params),
        "stage": "train",
    }
    record = RunFolder(folder, params.mlflow.experiment, f"train-{params.profile}")
    if not record.meta["params"]:
        record.params(flat)
        record.tags(run_tags | {"mlflow.source.git.commit": run_tags["git_commit"]})
    try:
        import mlflow

        tracking.ensure_experiment(params.mlflow.experiment)
        mlflow.set_experiment(params.mlflow.experiment)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else f"train-{params.profile}")
        if run_id is None:
            mlflow.log_params(flat)
            mlflow.set_tags(record.meta["tags"])
            # the data it trained and selected on, as MLflow datasets with meta.json's checksums
            lineage.log_splits(prepared, {"train": "training", "val": "validation"})
    except Exception as exc:  # no MLflow here, or no tracking server: the folder keeps the run
        log.warning(
            "MLflow tracking unavailable (%s); training records to %s only - import it later with "
            "`cifar10 registry import-run %s`",
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            folder,
            folder,
        )
        run = None
    return RunRecorder(record, run)


def train(
    params: Params,
    prepared: Path,
    model_out: Path,
    checkpoint_dir: Path,
    log_csv: Path,
    run_file: Path,
    stop_after_epochs: int | None = None,
    show_progress: bool = True,
    run_folder: Path | None = None,
) -> TrainSummary:
    """Train per ``params`` on ``prepared`` data; returns the final summary (also in ``run_file``).

    ``stop_after_epochs`` ends the process early as an interruption would, for resume tests.
    ``run_folder`` (default: beside the checkpoint folder, ``<checkpoint_dir>-run``) records the run
    whether or not MLflow answers (:mod:`common.run_folder`).
    """
    run_folder = run_folder or checkpoint_dir.with_name(checkpoint_dir.name + "-run")
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
    # The weight EMA (train.ema_decay) is what is evaluated each epoch and saved; it is part of the
    # checkpoint, so a resumed or re-run stage saves the same average.
    ema = None
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    meta = model_metadata(params.model.depth, params.model.width, data.classes, data.mean, data.std)

    state = {"epoch": 0, "step": 0, "history": [], "fingerprint": fp, "run_id": None, "clock": {}}
    if (checkpoint_dir / "state.json").exists():
        saved = json.loads((checkpoint_dir / "state.json").read_text())
        if saved.get("fingerprint") == fp:
            state = load_checkpoint(checkpoint_dir, model, optimizer, ema)
            if rank == 0:
                log.info("resuming from %s after epoch %d", checkpoint_dir, state["epoch"])
        elif rank == 0:
            log.warning("checkpoint in %s is for another configuration; starting afresh", checkpoint_dir)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if cfg.compile and device.type == "cuda":
        net = torch.compile(net)
    served = ema.module if ema is not None else model

    def after_epoch(end: EpochEnd) -> bool:
        state["step"], state["epoch"], state["clock"] = end.step, end.epoch, end.clock
        state["finished"] = end.finished
        if rank == 0:
            logits = predict_logits(served, val_x, data, device, cfg.eval_batch_size)
            val_loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_y)).item()
            row = {
                "epoch": end.epoch,
                **end.stats,
                "val_loss": val_loss,
                "val_acc": float((logits.argmax(1) == val_y).mean()),
            }
            state["history"].append(row)
            # Metrics first: a kill between the two repeats this epoch (logged twice), never loses it.
            record.metrics({k: v for k, v in row.items() if k != "epoch"}, step=end.epoch)
            save_checkpoint(checkpoint_dir, model, optimizer, state, meta, ema)
            log.info("epoch %d: %s", end.epoch, {k: round(v, 4) for k, v in row.items()})
        if world > 1:
            dist.barrier()
        return stop_after_epochs is not None and end.epoch >= stop_after_epochs

    state["finished"] = state.get("finished") or state["epoch"] >= cfg.epochs  # older checkpoints
    record = None
    if rank == 0:
        if state["epoch"] == 0:  # a fresh start: the folder of another configuration's run goes aside
            _set_aside(run_folder)
        source = json.loads((prepared / "meta.json").read_text())["source"]
        flat = _run_params(params, len(dataset), source)
        record = _open_record(
            params, run_folder, state.get("run_id"), digest, count_parameters(model), flat, prepared
        )
        state["run_id"] = record.folder.meta["mlflow_run_id"]
    status = "FAILED"
    try:
        if not state["finished"] and (stop_after_epochs is None or state["epoch"] < stop_after_epochs):
            last = fit_epochs(
                net,
                dataset,
                cfg,
                device,
                after_epoch,
                optimizer=optimizer,
                start_epoch=state["epoch"],
                start_step=state["step"],
                clock=state.get("clock"),
                world=world,
                show_progress=show_progress and rank == 0,
                on_step=(lambda: ema.update_parameters(model)) if ema is not None else None,
            )
            if last is not None and last.finished and not state["finished"]:
                # The budget ran out at an epoch's start: the last saved epoch is the finished model.
                state["finished"], state["clock"] = True, last.clock
                if rank == 0:
                    save_checkpoint(checkpoint_dir, model, optimizer, state, meta, ema)
        if not state["finished"]:
            status = "RUNNING"  # resumed by the next run of the stage
            return {"interrupted_after_epoch": state["epoch"], "run_id": state["run_id"]}
        if rank != 0:
            status = "FINISHED"
            return {}
        save_weights(served, model_out, meta)
        _write_log(log_csv, state["history"])
        record.artifact(model_out, "model")
        record.text(yaml.safe_dump(params.raw, sort_keys=False), "params.yaml")
        summary = {
            "run_id": record.run_id,
            "run_folder": str(record.folder.folder),
            "profile": params.profile,
            "epochs": cfg.epochs,
            "num_parameters": count_parameters(model),
            "data_hash": digest,
            "final": state["history"][-1] if state["history"] else {},
            "train_seconds": round(state["clock"].get("elapsed_s", 0.0), 1),
            "mean_images_per_s": float(np.mean([h["images_per_s"] for h in state["history"]])),
        }
        write_json(run_file, summary)
        status = "FINISHED"  # only once the weights and the summary are written
        return summary
    finally:
        if record is not None and status != "RUNNING":
            record.end(status)
        elif record is not None:  # interrupted: the next run of the stage resumes it
            record.suspend()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _write_log(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})
