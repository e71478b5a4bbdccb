"""Typed ``export`` section of ``params.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from common.config import from_dict

ONNX_PRECISIONS = ("fp32", "fp16", "int8")
ALL_PRECISIONS = (*ONNX_PRECISIONS, "trt_fp16")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class Tolerance:
    """A precision passes when every bound that is set holds (None = not checked)."""

    max_abs_logit: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(max_abs_logit=1e-3, min_agreement=1.0),
    "fp16": Tolerance(min_agreement=0.995),
    "int8": Tolerance(max_accuracy_drop=0.005),
    "trt_fp16": Tolerance(min_agreement=0.995),
}


@dataclass(frozen=True)
class ExportConfig:
    precisions: tuple[str, ...] = ONNX_PRECISIONS
    required: tuple[str, ...] = ("fp32",)
    opset: int = 18
    max_batch: int = 256
    parity_images: int = 1000
    calibration_images: int = 512
    accuracy_images: int = 0
    tolerances: dict[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))

    def __post_init__(self) -> None:
        unknown = sorted(set(self.precisions) - set(ONNX_PRECISIONS))
        if unknown:
            raise ValueError(
                f"unknown precision(s) {', '.join(unknown)}; choose from {', '.join(ONNX_PRECISIONS)}"
            )
        if self.opset < 17:
            raise ValueError(f"export.opset must be 17 or newer, got {self.opset}")
        if self.max_batch < 1:
            raise ValueError("export.max_batch must be positive")


def load_export_config(path: str | Path = "params.yaml") -> ExportConfig:
    raw = dict((yaml.safe_load(Path(path).read_text()) or {}).get("export") or {})
    tolerances = dict(DEFAULT_TOLERANCES)
    for name, bounds in (raw.pop("tolerances", None) or {}).items():
        if name not in ALL_PRECISIONS:
            raise ValueError(f"export.tolerances: unknown precision {name!r}")
        tolerances[name] = from_dict(Tolerance, bounds)
    cfg = from_dict(ExportConfig, raw)
    return ExportConfig(**{**cfg.__dict__, "tolerances": tolerances})
