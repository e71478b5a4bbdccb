"""What a registered version's MLflow Model states about itself: the one record sync builds from.

Everything that describes a served form (its tensors, classes, normalisation, batch limit, which
file passed which parity gate and what it scored) is written once, into the ``MLmodel`` file's
``metadata`` under :data:`METADATA_KEY`, and read back whole through :meth:`ModelFacts.from_mlmodel`.
The registry's tags repeat some of these facts for search and display; :func:`mismatches` names
every tag that disagrees with the model, so a tag edited by hand can never change what serves.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from common.exit_codes import UsageError
from common.export_manifest import Measured, Parity, Record, Source
from common.params_errors import describe_errors

METADATA_KEY = "cifar10"
QUALITY_FILE = "quality_reference.json"  # beside the served file, at the MLflow Model's root
FACTS_VERSION = 1


class ModelError(UsageError):
    """An MLflow Model this tool cannot serve from: missing, malformed, or contradicting its tags (2)."""


class Tensor(Record):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
    dtype: Literal["float32", "float16"]
    shape: tuple[int, ...]  # -1: the batch dimension


class ModelFacts(Record):
    facts_version: Literal[1] = FACTS_VERSION
    precision: Literal["fp32", "fp16", "int8", "trt_fp16"]
    format: Literal["onnx", "tensorrt_plan"]
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$", max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    quality_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    classes: tuple[str, ...] = Field(min_length=2)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input: Tensor
    output: Tensor
    max_batch: int = Field(ge=1)
    # What the pyfunc decodes with (the served preprocess's settings when it was exported)
    resample: Literal["bilinear", "bicubic"] = "bilinear"
    max_image_bytes: int = Field(ge=64)
    max_image_pixels: int = Field(ge=32 * 32)
    parity: Parity
    test: Measured | None = None
    source: Source
    export_command: str = ""
    built_on: dict[str, str] | None = None  # a TensorRT plan: the TensorRT, GPU and CUDA that built it

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of the classifier's input."""
        return self.input.shape[2], self.input.shape[3]

    def metadata(self) -> dict:
        return {METADATA_KEY: self.model_dump(mode="json")}

    @classmethod
    def from_mlmodel(cls, folder: Path, where: str) -> ModelFacts:
        """The facts of the MLflow Model in ``folder``; anything missing or malformed raises ModelError."""
        from mlflow.models import Model

        try:
            model = Model.load(str(folder))
        except Exception as exc:  # a missing or unparsable MLmodel
            raise ModelError(f"{where}: no readable MLmodel in {folder} ({exc})") from None
        raw = model.metadata.get(METADATA_KEY) if isinstance(model.metadata, dict) else None
        if not isinstance(raw, dict):
            raise ModelError(
                f"{where}: its MLmodel has no {METADATA_KEY!r} metadata; not exported by this tool"
            )
        try:
            facts = cls.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(
                f"{where}: MLmodel metadata: " + "; ".join(describe_errors(exc, cls, {}))
            ) from None
        shape = facts.input.shape
        if len(shape) != 4 or shape[1] != 3 or min(shape[2:]) < 1:
            raise ModelError(f"{where}: input {facts.input.name} has shape {shape}, not N x 3 x H x W")
        if len(facts.output.shape) != 2 or facts.output.shape[-1] != len(facts.classes):
            raise ModelError(
                f"{where}: output {facts.output.name} has shape {facts.output.shape}, "
                f"but the model names {len(facts.classes)} classes"
            )
        return facts


def mismatches(facts: ModelFacts, tags: dict[str, str]) -> list[str]:
    """Every registry tag that repeats a fact of the model and disagrees with it, both values named."""
    stated: dict[str, str] = {
        "precision": facts.precision,
        "format": facts.format,
        "file": facts.file,
        "sha256": facts.sha256,
        "max_batch": str(facts.max_batch),
        "classes": json.dumps(list(facts.classes)),
        "source_sha256": facts.source.sha256,
        "git_commit": facts.source.git_commit,
    }
    if facts.quality_sha256:
        stated["quality_sha256"] = facts.quality_sha256
    if facts.test is not None:
        stated |= {"test_accuracy": f"{facts.test.accuracy:.4f}", "test_images": str(facts.test.images)}
    out = []
    for key, value in stated.items():
        if key in tags and not _same(key, tags[key], value):
            out.append(f"tag {key}={tags[key]!r} but the model says {value!r}")
    if facts.quality_sha256 is None and "quality_sha256" in tags:
        out.append(
            f"tag quality_sha256={tags['quality_sha256']!r} but the model carries no quality reference"
        )
    if facts.quality_sha256 is not None and "quality_sha256" not in tags:  # would serve without it
        out.append(f"tag quality_sha256 is missing but the model carries {facts.quality_sha256!r}")
    for key, value in (facts.built_on or {}).items():  # what plan_compat judges the host against
        if tags.get(key) != value:
            out.append(f"tag {key}={tags.get(key)!r} but the model was built with {value!r}")
    return out


def _same(key: str, tagged: str, value: str) -> bool:
    """``classes`` is JSON: the same list however it is spaced; every other tag compares as text."""
    if key == "classes":
        with contextlib.suppress(ValueError):
            return json.loads(tagged) == json.loads(value)
    return tagged == value
