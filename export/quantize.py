"""int8 ONNX through ONNX Runtime static quantisation (QDQ), calibrated on real training images."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from export.onnx_io import INPUT_NAME


class _Reader:
    """ONNX Runtime's calibration protocol: yields input feeds until exhausted."""

    def __init__(self, x: np.ndarray, batch_size: int = 32) -> None:
        self._batches = iter([x[i : i + batch_size] for i in range(0, len(x), batch_size)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # pragma: no cover - not used by the MinMax calibrator
        raise NotImplementedError


def quantize_int8(src: Path, dest: Path, calibration: np.ndarray) -> Path:
    """Per-channel int8 weights, uint8 activations, QDQ format (what TensorRT and ORT both execute).

    The fp32 model is first run through ``quant_pre_process`` (shape inference and graph
    optimisation), as ONNX Runtime recommends, so Conv+BN patterns quantise as one unit.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    root = logging.getLogger()
    level = root.level
    # ONNX Runtime warns through the root logger for every 1-D BatchNorm tensor it cannot quantise
    # per channel (it falls back to per-tensor, which is right); keep that noise out of the logs.
    root.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(dest),
            _Reader(calibration.astype(np.float32)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    root.setLevel(level)
    return dest
