"""Weights small enough to bring back from the lent GPU machine, and exactly the same ones unpacked.

The device machine returns at most 16 MB per file and 8 files, and WRN-28-10 is 146 MB in fp32 (73 MB
in fp16). A pack stores every convolution and linear weight as int8 with one fp16 scale per output
channel (symmetric: ``w ~ q * scale``, ``q`` in -127..127), everything else (BatchNorm, biases) in
fp16 and integer buffers as they are: about a quarter of fp32. The blob is split into parts of at
most ``part_bytes``, and ``pack.json`` records the SHA-256 of every part and of the whole, so an
unpack refuses a missing, truncated or swapped part before it reads a tensor.

What this costs in accuracy is measured where the pack is made (``scripts.device_run`` scores the
unpacked weights on the test split beside the originals), not assumed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TypedDict

import torch
from safetensors.torch import load, save

from common.fsutil import atomic_path, write_json
from training.checkpoint import load_weights, read_metadata


class PackRecord(TypedDict):
    """``pack.json``: the parts of a weight pack and the SHA-256 of each and of the whole."""

    format: str
    source: str
    source_sha256: str
    bytes: int
    sha256: str
    parts: list[dict[str, str | int]]
    metadata: dict[str, str]


PACK_FILE = "pack.json"
QUANT, SCALE = ".int8", ".scale_fp16"


class PackError(ValueError):
    """A pack that is incomplete, altered or not a pack."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def quantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int8 + per-output-channel fp16 scales for float tensors of rank >= 2; fp16 for other floats."""
    out = {}
    for name, t in state.items():
        if t.is_floating_point() and t.ndim >= 2:
            w = t.float()
            amax = w.abs().reshape(w.shape[0], -1).amax(dim=1).clamp_min(1e-12)
            scale = (amax / 127.0).to(torch.float16).float()
            shape = (-1,) + (1,) * (w.ndim - 1)
            out[name + QUANT] = torch.round(w / scale.reshape(shape)).clamp(-127, 127).to(torch.int8)
            out[name + SCALE] = scale.to(torch.float16)
        elif t.is_floating_point():
            out[name] = t.to(torch.float16)
        else:
            out[name] = t
    return out


def dequantize(packed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fp32 state dict a pack stands for (integer buffers unchanged)."""
    state = {}
    for name, t in packed.items():
        if name.endswith(SCALE):
            continue
        if name.endswith(QUANT):
            base = name.removesuffix(QUANT)
            scale = packed[base + SCALE].float()
            state[base] = t.float() * scale.reshape((-1,) + (1,) * (t.ndim - 1))
        else:
            state[name] = t.float() if t.is_floating_point() else t
    return state


def pack(weights: Path, out_dir: Path, part_bytes: int = 15 * 2**20) -> PackRecord:
    """Write ``weights.pack.NNN`` parts and ``pack.json`` into ``out_dir``; returns the pack record."""
    metadata = read_metadata(weights)
    blob = save(quantize(load_weights(weights)), metadata=metadata)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(0, len(blob), part_bytes):
        name = f"weights.pack.{i // part_bytes:03d}"
        chunk = blob[i : i + part_bytes]
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": _sha(chunk)})
    record = {
        "format": "int8 per-output-channel (fp16 scales) for conv/linear weights, fp16 for other floats",
        "source": Path(weights).name,
        "source_sha256": _sha(Path(weights).read_bytes()),
        "bytes": len(blob),
        "sha256": _sha(blob),
        "parts": parts,
        "metadata": metadata,
    }
    write_json(out_dir / PACK_FILE, record)
    return record


def unpack(pack_dir: Path, out: Path) -> Path:
    """Check every part against ``pack.json``, join them and write fp32 safetensors at ``out``."""
    try:
        record = json.loads((pack_dir / PACK_FILE).read_text())
        parts = record["parts"]
    except (OSError, ValueError, KeyError) as exc:
        raise PackError(f"{pack_dir}: no readable {PACK_FILE} ({exc})") from exc
    chunks = []
    for part in parts:
        path = pack_dir / Path(part["file"]).name
        if not path.is_file():
            raise PackError(f"{pack_dir}: part {part['file']} is missing")
        data = path.read_bytes()
        if _sha(data) != part["sha256"]:
            raise PackError(
                f"{pack_dir}: part {part['file']} does not match its SHA-256 (altered or truncated)"
            )
        chunks.append(data)
    blob = b"".join(chunks)
    if _sha(blob) != record["sha256"]:
        raise PackError(f"{pack_dir}: the joined parts do not match the pack's SHA-256 (parts out of order?)")
    state = dequantize(load(blob))
    with atomic_path(out) as tmp:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=record["metadata"])
    return out
