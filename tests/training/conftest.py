"""What the training tests share: tiny prepared data, tiny settings, and one way to call ``train``."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.params import DataConfig, MlflowConfig, ModelConfig, Params, TrainConfig
from training.prepare import prepare
from training.train import train


@pytest.fixture
def prepared(image_folder, tmp_path) -> Path:
    out = tmp_path / "prepared"
    prepare(DataConfig(source=str(image_folder), val_per_class=2), out)
    return out


def tiny_params(**train_settings) -> Params:
    """WRN-10-1, 2 epochs of batch 16 unless overridden."""
    cfg = TrainConfig(**({"epochs": 2, "batch_size": 16, "lr": 0.05, "eval_batch_size": 64} | train_settings))
    return Params(
        profile="test",
        data=DataConfig(val_per_class=2),
        model=ModelConfig(depth=10, width=1),
        train=cfg,
        mlflow=MlflowConfig(experiment="unit-tests"),
    )


def run_training(params: Params, prepared: Path, out: Path, **kw) -> dict:
    """``train`` with every output under ``out`` (model, checkpoint, log, run file)."""
    return train(
        params,
        prepared,
        out / "model.safetensors",
        out / "ckpt",
        out / "log.csv",
        out / "run.json",
        show_progress=False,
        **kw,
    )
