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
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:
        raise WeightsError(f"cannot read weights from {path} (truncated or not safetensors?): {exc}") from exc


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the model they claim to be."""


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights as fp32 (the reference file stores conv/linear in fp16); integer buffers unchanged.

    Reads safetensors, or a torch state dict with ``weights_only=True`` (never arbitrary pickles).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix in {".pt", ".pth"}:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        else:
            state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for truncated headers
        raise WeightsError(
            f"cannot read weights from {path} (truncated or not a state dict?): {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path} does not hold a flat state dict of tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_model(
    path: Path, depth: int | None = None, width: int | None = None, num_classes: int = 10
) -> nn.Module:
    """The WideResNet a weights file describes, loaded with ``strict=True``, in eval mode.

    Depth and width come from the file's metadata; ``depth``/``width`` are what the caller expects
    (or, for files without metadata, what to build). Any disagreement is an error that names both.
    """
    from training.model import WideResNet

    path = Path(path)
    meta = read_metadata(path) if path.suffix == ".safetensors" and path.is_file() else {}
    try:
        file_arch = (int(meta["depth"]), int(meta["width"])) if "depth" in meta else None
    except ValueError as exc:
        raise WeightsError(f"{path}: unreadable depth/width metadata {meta}") from exc
    wanted = (depth, width) if depth is not None and width is not None else None
    if file_arch and wanted and file_arch != wanted:
        raise WeightsError(
            f"{path} holds WRN-{file_arch[0]}-{file_arch[1]} weights, but WRN-{depth}-{width} was asked for"
        )
    arch = file_arch or wanted
    if arch is None:
        raise WeightsError(f"{path} has no depth/width metadata; pass the architecture explicitly")
    state = load_weights(path)
    model = WideResNet(arch[0], arch[1], int(meta.get("num_classes", num_classes)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise WeightsError(f"{path} does not fit WRN-{arch[0]}-{arch[1]}: " + " ".join(first[1:4])) from exc
    return model.eval()


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    metadata: dict[str, str],
    ema: nn.Module | None = None,
) -> None:
    """Model, optimizer state, the loop's state and (with ``train.ema_decay``) the weight EMA."""
    opt = optimizer.state_dict()
    buffers = {
        f"{idx}.{name}": t.detach().cpu().contiguous()
        for idx, s in opt["state"].items()
        for name, t in s.items()
        if torch.is_tensor(t)
    }
    with atomic_dir(folder) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            str(tmp / "model.safetensors"),
            metadata=metadata,
        )
        save_file(buffers, str(tmp / "optimizer.safetensors"))
        if ema is not None:
            ema_state = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
            save_file(ema_state, str(tmp / "ema.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: nn.Module | None = None
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote; an EMA without its file starts from the weights."""
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    if ema is not None and (folder / "ema.safetensors").is_file():
        ema.load_state_dict(load_file(str(folder / "ema.safetensors")), strict=True)
    opt = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(folder / "optimizer.safetensors")).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = t
    opt["state"] = state
    optimizer.load_state_dict(opt)
    return json.loads((folder / "state.json").read_text())
