"""A registered version's tags are written and read back by one typed record, with a version number."""

from __future__ import annotations

import pytest

from common.exit_codes import UsageError
from common.export_manifest import ExportManifest
from registry.tags import TagError
from registry.version_record import RegisteredVersion

SHA = "ab" * 32


def _manifest(**change) -> ExportManifest:
    doc = {
        "command": "cifar10 export", "classes": ["cat", "dog"], "mean": [0.5] * 3, "std": [0.25] * 3,
        "source": {"weights": "/w/model.safetensors", "sha256": SHA, "git_commit": "abc", "run_id": "r1"},
        "architecture": {"depth": 10, "width": 1},
        "io": {"input": "input", "output": "logits", "max_batch": 64},
        "artifacts": [{
            "precision": "int8", "file": "model_int8.onnx", "format": "onnx", "sha256": SHA, "passed": True,
            "parity": {"precision": "int8", "images": 40, "max_abs_logit": 0.0123456, "mean_abs_logit": 0.001,
                       "top1_agreement": 0.987654, "accuracy_pytorch": 0.9, "accuracy": 0.8912345,
                       "accuracy_drop": 0.01, "finite": True, "passed": True},
            "test": {"accuracy": 0.912345, "images": 1000, "runtime": "onnxruntime 1.20",
                     "digest": "0123456789abcdef", "class_precision": {"cat": 0.9, "dog": 0.925}},
        }],
    } | change  # fmt: skip
    return ExportManifest.model_validate(doc)


def test_tags_round_trip_through_the_record():
    manifest = _manifest()
    record = RegisteredVersion.from_export(manifest, manifest.artifacts[0], "run-9")
    tags = record.to_tags()
    assert tags["record_version"] == "1" and tags["test_accuracy"] == "0.9123"
    assert RegisteredVersion.from_tags(tags, "m", 3) == record
    assert RegisteredVersion.from_tags(tags | {"set_by_someone_else": "x"}, "m", 3) == record


@pytest.mark.parametrize(
    "change,named",
    [
        ({"file": "../../etc/passwd"}, "tag file="),
        ({"sha256": "nothex"}, "tag sha256="),
        ({"precision": "fp64"}, "tag precision="),
        ({"record_version": "2"}, "tag record_version='2'"),
        ({"max_batch": "many"}, "max_batch"),
    ],
)
def test_a_tampered_tag_is_refused_by_name(change, named):
    manifest = _manifest()
    tags = RegisteredVersion.from_export(manifest, manifest.artifacts[0], "r").to_tags() | change
    with pytest.raises(TagError, match=named):
        RegisteredVersion.from_tags(tags, "m", 3)


def test_a_version_registered_before_the_record_reads_as_version_one():
    manifest = _manifest()
    tags = RegisteredVersion.from_export(manifest, manifest.artifacts[0], "r").to_tags()
    old = {k: v for k, v in tags.items() if k not in ("record_version", "classes")}
    record = RegisteredVersion.from_tags(old, "m", 1, model_tags={"classes": '["cat", "dog"]'})
    assert record.classes == ("cat", "dog") and record.record_version == 1


def test_a_manifest_of_another_format_or_shape_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(_manifest().model_dump_json().replace('"format_version":1', '"format_version":2'))
    with pytest.raises(UsageError, match="format_version: expected one of 1"):
        ExportManifest.read(path)
    _manifest().write(path)
    assert ExportManifest.read(path) == _manifest()
    with pytest.raises(UsageError, match="no export manifest"):
        ExportManifest.read(tmp_path / "none.json")


def test_a_release_record_carries_its_version_and_a_future_one_is_refused():
    import json

    from registry.release_record import ReleaseRecord

    record = ReleaseRecord("m-int8", 3, "m-fp32", 2, "shadow")
    data = json.loads(record.to_tag())
    assert data["record_version"] == 1 and ReleaseRecord.from_tag(record.to_tag(), "m") == record
    old = {k: v for k, v in data.items() if k != "record_version"}  # written before the field existed
    assert ReleaseRecord.from_tag(json.dumps(old), "m") == record
    with pytest.raises(TagError, match="record_version 2"):
        ReleaseRecord.from_tag(json.dumps(data | {"record_version": 2}), "m")


def test_a_manifest_with_an_artifact_that_answered_nan_reads_back(tmp_path):
    """A rejected artifact whose outputs were NaN records inf figures; the manifest stays readable."""
    manifest = _manifest()
    art = manifest.artifacts[0]
    bad = art.model_copy(update={"passed": False, "test": None, "parity": art.parity.model_copy(
        update={"max_abs_logit": float("inf"), "mean_abs_logit": float("inf"), "finite": False,
                "passed": False, "failures": ["NaN or Inf in the outputs"]})})  # fmt: skip
    manifest = manifest.model_copy(update={"artifacts": [art, bad]})
    manifest.write(tmp_path / "manifest.json")
    assert ExportManifest.read(tmp_path / "manifest.json") == manifest
