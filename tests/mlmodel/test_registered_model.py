"""A registered version is an MLflow Model: the onnx flavor, signatures, metadata, and the pyfunc."""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from common.export_manifest import ExportManifest
from common.fsutil import sha256_file
from mlmodel.facts import ModelFacts
from registry import store
from tests.conftest import CLASSES


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def registered(registry):
    manifest_path, cfg = registry
    rows = store.register_manifest(manifest_path, cfg)
    return ExportManifest.read(manifest_path), cfg, rows


def test_each_passed_form_is_registered_from_its_logged_model(registered, tmp_path):
    manifest, _cfg, rows = registered
    c = store.client()
    for row in rows:
        mv = c.get_model_version(row["name"], str(row["version"]))
        art = manifest.artifact(mv.tags["precision"])
        assert mv.source == f"models:/{art.model_id}"
        folder = mlflow.artifacts.download_artifacts(
            f"models:/{row['name']}/{row['version']}", dst_path=str(tmp_path / row["name"])
        )
        facts = ModelFacts.from_mlmodel(folder, row["name"])
        assert sha256_file(tmp_path / row["name"] / facts.file) == art.sha256
        model = mlflow.models.Model.load(folder)
        assert model.flavors["onnx"]["data"] == facts.file
        assert model.signature.inputs.input_names() == ["image"]
        assert (facts.input.name, facts.input.shape, facts.output.shape) == (
            "input",
            (-1, 3, 32, 32),
            (-1, 10),
        )


def test_the_pyfunc_takes_encoded_images_and_answers_label_index_probabilities(registered, small_prepared):
    _manifest, cfg, rows = registered
    name = cfg.registered_name("fp32")
    version = next(r["version"] for r in rows if r["name"] == name)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    x = np.load(small_prepared / "test_x.npy")[:8]
    out = model.predict(pd.DataFrame({"image": [png(p) for p in x]}))
    assert list(out.columns) == ["label", "class_index", "probabilities"]
    assert all(out["label"][i] == CLASSES[out["class_index"][i]] for i in range(8))
    assert np.allclose([p.sum() for p in out["probabilities"]], 1, atol=1e-5)


def test_a_tag_that_contradicts_the_model_stops_the_sync_naming_both_values(registered, tmp_path):
    """Tags repeat some facts for search; the MLflow Model is the truth, and an edited tag is refused."""
    from common.params import Params, ServingConfig
    from mlmodel.facts import ModelError
    from registry import aliases
    from registry.sync import sync

    _manifest, cfg, rows = registered
    name = cfg.registered_name("fp32")
    version = next(r["version"] for r in rows if r["name"] == name)
    aliases.promote(name, "production", version)
    params = Params(profile="test", registry=cfg.replace(serve=("fp32",), ensemble_target="fp32"),
                    serving=ServingConfig(preferred_batch_sizes=(8,)))  # fmt: skip
    assert sync(params, tmp_path / "repo", tmp_path / "cache").changed
    recorded = store.client().get_model_version(name, str(version)).tags["max_batch"]
    store.client().set_model_version_tag(name, str(version), "max_batch", "8")
    with pytest.raises(ModelError, match=f"tag max_batch='8' but the model says '{recorded}'"):
        sync(params, tmp_path / "repo2", tmp_path / "cache")
    assert not (tmp_path / "repo2").exists()


def test_wrong_input_to_the_pyfunc_gets_a_clear_error(registered):
    from mlflow.exceptions import MlflowException

    _manifest, cfg, rows = registered
    name = cfg.registered_name("fp32")
    version = next(r["version"] for r in rows if r["name"] == name)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    good = png(np.zeros((32, 32, 3), dtype=np.uint8))
    for bad, reason in [
        (pd.DataFrame({"picture": [good]}), "image"),  # the wrong column: MLflow's schema error
        (pd.DataFrame({"image": ["a string, not bytes"]}), "image"),
        (pd.DataFrame({"image": [good, b"\x89PNG\r\n\x1a\n truncated"]}), "image 1 of the request"),
        (pd.DataFrame({"image": [b""]}), "empty"),
    ]:
        with pytest.raises(MlflowException, match=reason):
            model.predict(bad)
    assert list(model.predict(pd.DataFrame({"image": [good]}))["class_index"])  # and it still answers
