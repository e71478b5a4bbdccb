"""A TensorRT plan built where it will serve: ``trtexec`` inside the pinned NGC image, on the GPU host.

A plan only runs on the TensorRT release and GPU architecture that built it, so it is built by the
``trtexec`` of the image that serves it (``compose.yaml``'s pin), on the serving GPU, from the
*registered* ONNX file. The parity gate runs there too: ``trtexec`` executes the plan on the parity
images (``--loadInputs``, raw float32) and writes its outputs as JSON (``--exportOutput``), which
are compared here with ONNX Runtime's fp32 logits of the same file, under the same ``trt_fp16``
tolerance the export applies.

This module only *generates* the command lines and reads what ``trtexec`` writes; the orchestration
(resolve, run, register) is ``scripts/gpu_host_plan.py``. Everything here is tested without a GPU.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.onnx_io import INPUT_NAME, OUTPUT_NAME
from export.tensorrt_engine import profile_batches

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where NGC images that ship TensorRT keep it
WORKDIR = "/work"  # the host folder is mounted here in the container
IMAGE_DIMS = (3, 32, 32)


@dataclass(frozen=True)
class Container:
    """How ``trtexec`` is run: ``docker run`` of ``image`` on ``gpu`` with ``host_dir`` at /work."""

    image: str
    host_dir: Path
    gpu: int = 0
    trtexec: str = TRTEXEC
    docker: str = "docker"

    def prefix(self) -> list[str]:
        return [
            self.docker,
            "run",
            "--rm",
            f"--gpus=device={self.gpu}",
            f"--volume={Path(self.host_dir).absolute()}:{WORKDIR}",
            self.image,
            self.trtexec,
        ]


def _shape(batch: int) -> str:
    return f"{INPUT_NAME}:{'x'.join(str(d) for d in (batch, *IMAGE_DIMS))}"


def build_command(
    box: Container, onnx_name: str, plan_name: str, max_batch: int, workspace_mib: int
) -> list[str]:
    """Parse the ONNX, build an FP16 plan with one profile over batch 1..max_batch, run nothing."""
    low, opt, high = profile_batches(max_batch)
    return [
        *box.prefix(),
        f"--onnx={WORKDIR}/{onnx_name}",
        f"--saveEngine={WORKDIR}/{plan_name}",
        "--fp16",
        f"--minShapes={_shape(low)}",
        f"--optShapes={_shape(opt)}",
        f"--maxShapes={_shape(high)}",
        f"--memPoolSize=workspace:{workspace_mib}",
        "--skipInference",
    ]


def infer_command(box: Container, plan_name: str, batch: int, input_name: str, output_name: str) -> list[str]:
    """Run the plan once on ``input_name`` (raw float32, ``batch`` images) and export the outputs."""
    return [
        *box.prefix(),
        f"--loadEngine={WORKDIR}/{plan_name}",
        f"--shapes={_shape(batch)}",
        f"--loadInputs={INPUT_NAME}:{WORKDIR}/{input_name}",
        f"--exportOutput={WORKDIR}/{output_name}",
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
        "--avgRuns=1",
    ]


def write_chunks(x: np.ndarray, folder: Path, stem: str, max_batch: int) -> list[tuple[str, int]]:
    """Normalised N x 3 x 32 x 32 float32 images as raw files of at most ``max_batch`` images each."""
    out = []
    for i in range(0, len(x), max_batch):
        name = f"{stem}_{i // max_batch:03d}.bin"
        np.ascontiguousarray(x[i : i + max_batch], dtype="<f4").tofile(folder / name)
        out.append((name, min(max_batch, len(x) - i)))
    return out


def read_output(path: Path, batch: int, classes: int) -> np.ndarray:
    """The logits ``trtexec --exportOutput`` wrote: a JSON list of {name, dimensions, values}."""
    tensors = {t["name"]: t for t in json.loads(path.read_text())}
    if OUTPUT_NAME not in tensors:
        raise ValueError(f"{path}: no output {OUTPUT_NAME!r} (has {sorted(tensors)})")
    values = np.asarray(tensors[OUTPUT_NAME]["values"], dtype=np.float32)
    if values.size != batch * classes:
        raise ValueError(f"{path}: {values.size} values, expected {batch} x {classes}")
    return values.reshape(batch, classes)


_FACTS = {
    "trt_version": re.compile(r"TensorRT version:\s*(\d+(?:\.\d+){1,3})"),
    "trt_compute_capability": re.compile(r"Compute Capability:\s*(\d+\.\d+)"),
    "trt_gpu": re.compile(r"Selected Device:\s*(.+?)\s*$", re.MULTILINE),
}


def build_facts(log: str, max_batch: int, cuda: str) -> dict[str, str]:
    """What ``trtexec`` printed about the TensorRT and the GPU that built the plan (registry tags)."""
    facts = {}
    for key, pattern in _FACTS.items():
        found = pattern.search(log)
        if found is None:
            raise ValueError(f"trtexec's log does not say its {key.removeprefix('trt_')} ({pattern.pattern})")
        facts[key] = found.group(1)
    return facts | {"trt_cuda": cuda, "trt_profile": "/".join(str(b) for b in profile_batches(max_batch))}
