"""The ``class_metric`` switch: spec field -> postprocess config parameter -> counter on or off."""

from __future__ import annotations

import numpy as np
import pytest

from serving.repository.model_configs import postprocess_config
from serving.repository.spec import (
    RepositorySpec,
    ServedModel,
    ServedVersion,
    SpecError,
    spec_from_dict,
    spec_to_dict,
)
from tests.serving.conftest import CLASSES, MEAN, STD
from tests.serving.test_python_models import PACKAGE, FakeFamily, FakeTensor, load, pb_utils  # noqa: F401


def make(tmp_path, **kw) -> RepositorySpec:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"onnx")
    model = ServedModel(
        "wrn_fp32", "onnxruntime", (ServedVersion(1, artifact),), production=1, max_batch_size=64
    )
    return RepositorySpec((model,), "wrn_fp32", CLASSES, MEAN, STD, **kw)


def test_spec_default_on_roundtrip_and_validation(tmp_path):
    spec = make(tmp_path)
    assert spec.class_metric is True
    assert postprocess_config(spec).parameters["class_metric"].string_value == "true"
    off = make(tmp_path, class_metric=False)
    assert postprocess_config(off).parameters["class_metric"].string_value == "false"
    assert spec_from_dict(spec_to_dict(off)) == off
    legacy = spec_to_dict(spec)
    del legacy["class_metric"]  # a .spec.json written before the switch existed
    assert spec_from_dict(legacy).class_metric is True
    with pytest.raises(SpecError, match="class_metric"):
        make(tmp_path, class_metric="no").validate()


@pytest.mark.parametrize("enabled", [True, False])
def test_postprocess_counts_only_when_enabled(pb_utils, tmp_path, enabled):  # noqa: F811
    spec = make(tmp_path, class_metric=enabled)
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    model = load(PACKAGE / "python_models/postprocess.py", postprocess_config(spec), tmp_path)
    logits = np.random.default_rng(1).normal(size=(6, 10)).astype(np.float32)
    (response,) = model.execute([{"LOGITS": FakeTensor("LOGITS", logits)}])
    assert response.error is None
    assert response.outputs["PROBABILITIES"].argmax(axis=1).tolist() == logits.argmax(axis=1).tolist()
    if enabled:
        (family,) = FakeFamily.created
        assert sum(m.value for m in family.metrics) == 6
    else:
        assert FakeFamily.created == []


def test_postprocess_rejects_a_bad_switch_value(pb_utils, tmp_path):  # noqa: F811
    config = postprocess_config(make(tmp_path))
    config.parameters["class_metric"].string_value = "maybe"
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    with pytest.raises(ValueError, match="class_metric"):
        load(PACKAGE / "python_models/postprocess.py", config, tmp_path)
