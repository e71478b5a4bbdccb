"""Checkpoints as safetensors state dicts plus a JSON state file: nothing pickled, ever.

A checkpoint is a folder: ``model.safetensors`` (weights, with the metadata an exporter needs),
``optimizer.safetensors`` (momentum buffers) and ``state.json`` (epoch, step, history, config
fingerprint). The folder is swapped in atomically, so a kill at any point leaves the last complete
epoch's checkpoint intact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from common.fsutil import atomic_dir, atomic_path


def model_metadata(depth: int, width: int, classes: tuple[str, ...], mean, std) -> dict[str, str]:
    """The safetensors metadata of the reference weights, so our files and theirs read alike."""
    return {
        "arch": f"wrn-{depth}-{width}",
        "depth": str(depth),
        "width": str(width),
        "num_classes": str(len(classes)),
        "classes": json.dumps(list(classes)),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "bn_eps": "1e-5",
        "input": "N x 3 x 32 x 32 float, RGB, (x/255 - mean)/std",
    }


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights as fp32 (the reference file stores conv/linear in fp16); integer buffers unchanged."""
    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}


def save_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
    metadata: dict[str, str],
) -> None:
    opt = optimizer.state_dict()
    buffers = {
        f"{idx}.{name}": t.detach().cpu().contiguous()
        for idx, s in opt["state"].items() for name, t in s.items() if torch.is_tensor(t)
    }
    with atomic_dir(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(tmp / "model.safetensors"), metadata=metadata)
        save_file(buffers, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def load_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    opt = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(folder / "optimizer.safetensors")).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    opt["state"] = state
    optimizer.load_state_dict(opt)
    return json.loads((folder / "state.json").read_text())
