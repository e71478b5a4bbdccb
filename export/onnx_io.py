"""ONNX export, the fp16 conversion, metadata, and running an ONNX file with ONNX Runtime."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx

INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the classifier's interface in every artifact


def export_fp32(model, path: Path, opset: int, max_batch: int) -> Path:
    """Export with a dynamic batch dimension through the ``torch.export`` based exporter.

    The exporter's own graph optimisation (constant folding, BatchNorm folding into Conv, dead code
    removal) runs by default; the result is written as one self-contained file.
    """
    import torch

    model = model.eval().cpu()
    example = torch.zeros(2, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return path


def convert_fp16(src: Path, dest: Path) -> Path:
    """fp16 weights and compute, fp32 graph inputs/outputs (callers need not change their tensors)."""
    from onnxconverter_common import float16

    proto = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(proto, str(dest))
    return dest


def set_metadata(path: Path, metadata: dict[str, object]) -> None:
    """Store ``metadata`` in the file's ``metadata_props`` (non-strings as JSON)."""
    proto = onnx.load(str(path))
    existing = {p.key: p.value for p in proto.metadata_props}
    existing |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    del proto.metadata_props[:]
    for k, v in existing.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))


def read_metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


# ONNX Runtime's threads spin while a run is in progress and stop when it returns: the served
# classifiers' default (``cifar10 serve --ort-spinning run``), for in-process runs compared with them.
SPIN_DURING_RUN_ONLY = {"session.force_spinning_stop": "1"}


def session(path: Path, threads: int | None = None, config: dict[str, str] | None = None):
    """A CPU ONNX Runtime session with all graph optimisations and ``threads`` intra-op threads.

    ``config``: session config entries (e.g. :data:`SPIN_DURING_RUN_ONLY`), for the benchmarks
    that compare in-process ONNX Runtime with the server under the same thread settings.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.log_severity_level = 3
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray, batch_size: int = 256, sess=None) -> np.ndarray:
    """Logits for normalised float32 N×3×32×32 input, in batches."""
    sess = sess or session(path)
    outs = [
        sess.run([OUTPUT_NAME], {INPUT_NAME: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32)


def runtime_name() -> str:
    """What scored an artifact, recorded beside the figure (another CPU may differ in int8 kernels)."""
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} CPUExecutionProvider"
