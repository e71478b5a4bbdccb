"""The export manifest: what the export stage wrote, as a typed record the registry reads.

``manifest.json`` is the contract between the export stage and the registry: which artifact files
passed their parity gate, their checksums, the classes and normalisation they expect, and the test
accuracy each measured through its own runtime. The registry acts on nothing else, so the record is
validated when it is read (:meth:`ExportManifest.read`) and carries ``format_version``: a future
change of shape is refused by name instead of being misread. It lives in ``common`` because the
export stage writes it and the registry (and so the client, through it) reads it without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.exit_codes import UsageError
from common.params_errors import describe_errors

FORMAT_VERSION = 1
QUALITY_REFERENCE_FILE = "quality_reference.json"  # a form's reference, beside its model file once registered


class Record(BaseModel):
    # A parity gate that saw NaN or Inf records inf: written and read back as JSON's Infinity, not null.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class Source(Record):
    weights: str
    sha256: str
    git_commit: str
    run_id: str | None = None  # the training run; None for weights from outside
    # SHA-256 of dvc.lock when the export ran (under `dvc repro`: the upstream stages' data, code and
    # outputs); None outside a DVC workspace.
    dvc_lock: str | None = None


class Parity(Record):
    """The parity gate's figures on the validation rows: what :func:`export.parity.compare` returns."""

    precision: str
    images: int
    max_abs_logit: float
    mean_abs_logit: float
    top1_agreement: float
    accuracy_pytorch: float
    accuracy: float
    accuracy_drop: float
    finite: bool
    passed: bool
    failures: list[str] = Field(default_factory=list)


class Measured(Record):
    """Test accuracy measured through the artifact's own runtime, on images named by ``digest``."""

    accuracy: float = Field(ge=0, le=1)
    images: int = Field(ge=1)
    runtime: str
    split: Literal["test"] = "test"
    digest: str | None = None
    class_precision: dict[str, float] = Field(default_factory=dict)


class Artifact(Record):
    precision: Literal["fp32", "fp16", "int8", "trt_fp16"]
    file: str
    format: Literal["onnx", "tensorrt_plan"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    passed: bool
    parity: Parity
    test: Measured | None = None
    built_on: dict[str, str] | None = None  # a TensorRT plan: the TensorRT, GPU and CUDA that built it
    # The form's quality reference (monitoring.quality_reference), relative to the export folder;
    # None for a rejected artifact or a manifest written before references existed.
    quality_reference: str | None = None
    quality_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    # The MLflow 3 logged model this form was logged as (mlmodel.logged); None: rejected, or a
    # manifest from before versions were MLflow Models (registered from the run's files then).
    model_id: str | None = None


class Architecture(Record):
    depth: int
    width: int


class Io(Record):
    input: str
    output: str
    max_batch: int = Field(ge=1)
    layout: Literal["NCHW"] = "NCHW"


class ExportManifest(Record):
    format_version: Literal[1] = FORMAT_VERSION  # a manifest without one was written as version 1
    command: str = ""
    source: Source
    classes: list[str] = Field(min_length=2)
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    architecture: Architecture
    io: Io
    artifacts: list[Artifact]
    skipped: dict[str, str] = Field(default_factory=dict)
    mlflow_run_id: str | None = None

    @property
    def passed(self) -> list[Artifact]:
        return [a for a in self.artifacts if a.passed]

    def artifact(self, precision: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.precision == precision), None)

    def with_model_ids(self, model_ids: dict[str, str]) -> ExportManifest:
        """This manifest with each logged form's MLflow ``model_id`` recorded on its artifact."""
        artifacts = [a.model_copy(update={"model_id": model_ids.get(a.precision)}) for a in self.artifacts]
        return self.model_copy(update={"artifacts": artifacts})

    def write(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> ExportManifest:
        """The manifest at ``path``, validated; a malformed one is bad input (exit code 2)."""
        try:
            return cls.model_validate_json(Path(path).read_text())
        except FileNotFoundError:
            raise UsageError(f"{path}: no export manifest; run the export stage first") from None
        except ValidationError as exc:
            raise UsageError(f"{path}: " + "; ".join(describe_errors(exc, cls, {}))) from None
