"""A registered version as a typed record, and its MLflow tags, both ways, in one place.

MLflow stores a version's facts as string tags. :meth:`RegisteredVersion.to_tags` is the only code
that writes them at registration and :meth:`RegisteredVersion.from_tags` the only code that reads
them back whole, through the validators of :mod:`registry.tags` (tags are untrusted input: anyone
with write access can set one). ``record_version`` says which shape the tags have; a version
registered before it existed reads as version 1, and one from the future is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.export_manifest import Artifact, ExportManifest
from registry import tags as tag

RECORD_VERSION = 1
BUILT_ON = ("trt_version", "trt_compute_capability", "trt_cuda", "trt_profile", "trt_gpu")


class TestFigures(BaseModel):
    """Test accuracy the version's own artifact scored at export, through its own runtime."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    accuracy: float = Field(ge=0, le=1)
    images: int = Field(ge=1)
    runtime: str = ""
    digest: str | None = None  # which images and labels: figures compare only on the same digest
    class_precision: dict[str, float] = Field(default_factory=dict)


class RegisteredVersion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    record_version: Literal[1] = RECORD_VERSION
    precision: Literal["fp32", "fp16", "int8", "trt_fp16"]
    format: Literal["onnx", "tensorrt_plan"]
    file: str
    sha256: str
    run_id: str
    git_commit: str
    source_sha256: str
    source_weights: str
    source_run_id: str  # the training run; "" for outside weights
    parity_max_abs_logit: float
    parity_agreement: float
    parity_accuracy: float
    max_batch: int = Field(ge=1)
    export_command: str = ""
    classes: tuple[str, ...]  # per version: the gate refuses one that answers in other classes
    built_on: dict[str, str] = Field(default_factory=dict)  # a TensorRT plan: what built it
    test: TestFigures | None = None
    quality_sha256: str | None = None  # its quality_reference.json (None: registered before they existed)

    @classmethod
    def from_export(cls, manifest: ExportManifest, art: Artifact, run_id: str) -> RegisteredVersion:
        measured = art.test
        return cls(
            precision=art.precision,
            format=art.format,
            file=Path(art.file).name,
            sha256=art.sha256,
            run_id=run_id,
            git_commit=manifest.source.git_commit,
            source_sha256=manifest.source.sha256,
            source_weights=Path(manifest.source.weights).name,
            source_run_id=manifest.source.run_id or "",
            parity_max_abs_logit=float(f"{art.parity.max_abs_logit:.3e}"),  # as the tags hold them
            parity_agreement=round(art.parity.top1_agreement, 4),
            parity_accuracy=round(art.parity.accuracy, 4),
            max_batch=manifest.io.max_batch,
            export_command=manifest.command,
            classes=tuple(manifest.classes),
            built_on=art.built_on or {},
            test=TestFigures(
                **measured.model_dump(exclude={"split"}) | {"accuracy": round(measured.accuracy, 4)}
            )
            if measured
            else None,
            quality_sha256=art.quality_sha256,
        )

    def to_tags(self) -> dict[str, str]:
        out = {
            "record_version": str(self.record_version),
            "precision": self.precision,
            "format": self.format,
            "file": self.file,
            "sha256": self.sha256,
            "run_id": self.run_id,
            "git_commit": self.git_commit,
            "source_sha256": self.source_sha256,
            "source_weights": self.source_weights,
            "source_run_id": self.source_run_id,
            "parity_passed": "true",
            "parity_max_abs_logit": f"{self.parity_max_abs_logit:.3e}",
            "parity_agreement": f"{self.parity_agreement:.4f}",
            "parity_accuracy": f"{self.parity_accuracy:.4f}",
            "max_batch": str(self.max_batch),
            "export_command": self.export_command,
            "classes": json.dumps(list(self.classes)),
        } | self.built_on
        if self.quality_sha256:
            out["quality_sha256"] = self.quality_sha256
        if self.test:
            out |= {
                "test_accuracy": f"{self.test.accuracy:.4f}",
                "test_images": str(self.test.images),
                "test_runtime": self.test.runtime,
            }
            if self.test.digest:
                out["test_digest"] = self.test.digest
                out["test_class_precision"] = json.dumps(self.test.class_precision, sort_keys=True)
        return out

    @classmethod
    def from_tags(
        cls, tags: dict[str, str], name: str, version: int, model_tags: dict[str, str] | None = None
    ) -> RegisteredVersion:
        """The record a version's tags describe; a malformed or missing tag raises ``TagError`` naming it.

        ``model_tags``: the registered model's, for versions registered before each carried its classes.
        """
        where = f"{name} v{version}"
        record = tags.get("record_version", "1")
        if record != str(RECORD_VERSION):
            raise tag.TagError(f"{where}: tag record_version={record!r}; this tool reads {RECORD_VERSION}")
        try:
            figures = {
                k: float(tags[k]) for k in ("parity_max_abs_logit", "parity_agreement", "parity_accuracy")
            }
            max_batch = int(tags["max_batch"])
        except (KeyError, ValueError) as exc:
            raise tag.TagError(f"{where}: parity or max_batch tag missing or not a number ({exc})") from None
        measured = tag.accuracy(tags)
        test = None
        if measured:
            digest = tag.test_digest(tags)
            test = TestFigures(
                accuracy=measured[0], images=measured[1], runtime=tags.get("test_runtime", ""),
                digest=digest, class_precision=tag.class_precision(tags) if digest else {},
            )  # fmt: skip
        return cls(
            precision=tag.precision(tags, where),
            format=tag.artifact_format(tags, name, version),
            file=tag.artifact_file(tags, name, version),
            sha256=tag.artifact_sha256(tags, name, version),
            run_id=tags.get("run_id", ""),
            git_commit=tags.get("git_commit", ""),
            source_sha256=tags.get("source_sha256", ""),
            source_weights=tags.get("source_weights", ""),
            source_run_id=tags.get("source_run_id", ""),
            max_batch=max_batch,
            export_command=tags.get("export_command", ""),
            classes=tag.version_classes(tags, model_tags or {}, where),
            built_on={k: tags[k] for k in BUILT_ON if k in tags},
            test=test,
            quality_sha256=tag.quality_sha256(tags, name, version),
            **figures,
        )
