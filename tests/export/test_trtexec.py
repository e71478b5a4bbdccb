"""The GPU host's plan build: generated ``trtexec`` command lines and what is read back (no GPU here).

Neither Docker, TensorRT nor a GPU exists in this workplace, so ``scripts.gpu_host_plan`` is run
with ``--dry-run`` against a real registry; ``trtexec``'s outputs are written here in the format
it documents (``--exportOutput``: a JSON list of {name, dimensions, values}).
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from common.params import ExportConfig, Params, RegistryConfig
from export import trtexec
from tests.conftest import ROOT

BOX = trtexec.Container(image="nvcr.io/nvidia/tritonserver:24.10-py3", host_dir=Path("/srv/plan"), gpu=1)
PREFIX = [
    "docker",
    "run",
    "--rm",
    "--gpus=device=1",
    "--volume=/srv/plan:/work",
    "nvcr.io/nvidia/tritonserver:24.10-py3",
    "/usr/src/tensorrt/bin/trtexec",
]
# What trtexec prints before building (TensorRT 10), trimmed to the lines read here.
LOG = """&&&& RUNNING TensorRT.trtexec [TensorRT v100500] # trtexec --onnx=/work/model.onnx
[11/30/2026-10:00:00] [I] === Device Information ===
[11/30/2026-10:00:00] [I] Available Devices:
[11/30/2026-10:00:00] [I]   Device 0: "NVIDIA H100 80GB HBM3" UUID: GPU-0000
[11/30/2026-10:00:00] [I] Selected Device: NVIDIA H100 80GB HBM3
[11/30/2026-10:00:00] [I] Selected Device ID: 0
[11/30/2026-10:00:00] [I] Compute Capability: 9.0
[11/30/2026-10:00:00] [I] TensorRT version: 10.5.0
"""


def test_the_build_command_is_trtexec_in_the_pinned_image_with_the_export_profile():
    assert trtexec.build_command(BOX, "model.onnx", "model.plan", 256, 1024) == [
        *PREFIX,
        "--onnx=/work/model.onnx",
        "--saveEngine=/work/model.plan",
        "--fp16",
        "--minShapes=input:1x3x32x32",
        "--optShapes=input:128x3x32x32",  # export.tensorrt_engine.profile_batches: max // 2
        "--maxShapes=input:256x3x32x32",
        "--memPoolSize=workspace:1024",
        "--skipInference",
    ]


def test_the_parity_command_runs_the_plan_once_on_raw_inputs_and_exports_its_outputs():
    assert trtexec.infer_command(BOX, "model.plan", 40, "parity_000.bin", "parity_000.json") == [
        *PREFIX,
        "--loadEngine=/work/model.plan",
        "--shapes=input:40x3x32x32",
        "--loadInputs=input:/work/parity_000.bin",
        "--exportOutput=/work/parity_000.json",
        "--iterations=1",
        "--warmUp=0",
        "--duration=0",
        "--avgRuns=1",
    ]


def test_inputs_go_out_as_raw_float32_chunks_and_logits_come_back_in_order(tmp_path):
    x = np.random.default_rng(0).normal(size=(70, 3, 32, 32)).astype(np.float32)
    chunks = trtexec.write_chunks(x, tmp_path, "parity", 32)
    assert chunks == [("parity_000.bin", 32), ("parity_001.bin", 32), ("parity_002.bin", 6)]
    again = np.concatenate([np.fromfile(tmp_path / n, dtype="<f4").reshape(b, 3, 32, 32) for n, b in chunks])
    np.testing.assert_array_equal(again, x)
    logits = np.random.default_rng(1).normal(size=(6, 10)).astype(np.float32)
    out = [{"name": "logits", "dimensions": "6x10", "values": logits.ravel().tolist()}]
    (tmp_path / "o.json").write_text(json.dumps(out))
    np.testing.assert_allclose(trtexec.read_output(tmp_path / "o.json", 6, 10), logits)
    with pytest.raises(ValueError, match="60 values, expected 5 x 10"):
        trtexec.read_output(tmp_path / "o.json", 5, 10)


def test_the_build_facts_come_from_trtexecs_own_log():
    assert trtexec.build_facts(LOG, 256, "12.6.2") == {
        "trt_version": "10.5.0",
        "trt_compute_capability": "9.0",
        "trt_gpu": "NVIDIA H100 80GB HBM3",
        "trt_cuda": "12.6.2",
        "trt_profile": "1/128/256",
    }
    with pytest.raises(ValueError, match="does not say its compute_capability"):
        trtexec.build_facts(LOG.replace("Compute Capability: 9.0", ""), 256, "12.6.2")


def test_the_gpu_host_script_plans_every_step_from_the_registered_onnx(
    small_export, small_prepared, monkeypatch, tmp_path
):
    from registry import aliases, store
    from scripts.gpu_host_plan import run

    folder, uri = small_export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = RegistryConfig(model_prefix=f"g{uuid.uuid4().hex[:8]}")
    store.register_manifest(folder / "manifest.json", cfg)
    aliases.promote(cfg.registered_name("fp32"), "production", 1)
    params = Params(profile="test", registry=cfg, export=ExportConfig(parity_images=40, accuracy_images=0))
    params = params.replace(data=params.data.replace(val_per_class=4))
    args = argparse.Namespace(
        version=None,
        compose=ROOT / "compose.yaml",
        image=None,
        gpu=0,
        trtexec=trtexec.TRTEXEC,
        prepared=small_prepared,
        cache=tmp_path / "cache",
        workdir=tmp_path / "plan",
        dry_run=True,
    )
    planned = run(params, args)
    assert planned["version"] == 1 and planned["image"].startswith("nvcr.io/nvidia/tritonserver:")
    build, *infer = planned["commands"]
    assert f"--volume={tmp_path / 'plan'}:/work" in build and "--maxShapes=input:64x3x32x32" in build
    # The registered file, byte for byte (its hash was checked on the way).
    assert (tmp_path / "plan" / "model.onnx").read_bytes() == (folder / "model.fp32.onnx").read_bytes()
    # 40 parity (validation) images in one chunk, then all 20 test images in another.
    assert [c.split("--shapes=")[1].split()[0] for c in infer] == ["input:40x3x32x32", "input:20x3x32x32"]
    assert all(planned["image"] in c for c in planned["commands"])
