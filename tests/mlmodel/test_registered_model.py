"""A registered version is an MLflow Model: the onnx flavor, signatures, metadata, and the pyfunc."""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
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


@pytest.fixture(scope="module")
def registered(small_export, tmp_path_factory):
    """The small export registered once for this module, under a prefix of its own."""
    import shutil
    import uuid

    from common.params import RegistryConfig

    folder, uri = small_export
    copy = tmp_path_factory.mktemp("registered") / "export"
    shutil.copytree(folder, copy)
    cfg = RegistryConfig(model_prefix=f"r{uuid.uuid4().hex[:8]}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        rows = store.register_manifest(copy / "manifest.json", cfg)
        yield ExportManifest.read(copy / "manifest.json"), cfg, rows


def test_each_passed_form_is_registered_from_its_logged_model(registered, tmp_path):
    manifest, _cfg, rows = registered
    c = store.client()
    for row in rows:
        mv = c.get_model_version(row["name"], str(row["version"]))
        art = manifest.artifact(mv.tags["precision"])
        assert mv.source == f"models:/{art.model_id}"
        linked = json.loads(c.get_logged_model(art.model_id).tags["mlflow.modelVersions"])
        assert {"name": row["name"], "version": str(row["version"])} in linked  # the UI's link
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
    try:
        with pytest.raises(ModelError, match=f"tag max_batch='8' but the model says '{recorded}'"):
            sync(params, tmp_path / "repo2", tmp_path / "cache")
        assert not (tmp_path / "repo2").exists()
    finally:
        store.client().set_model_version_tag(name, str(version), "max_batch", recorded)
    # a deleted tag is no escape: the model states a quality reference, so serving without it is refused
    quality = store.client().get_model_version(name, str(version)).tags["quality_sha256"]
    store.client().delete_model_version_tag(name, str(version), "quality_sha256")
    try:
        with pytest.raises(ModelError, match="tag quality_sha256 is missing but the model carries"):
            sync(params, tmp_path / "repo3", tmp_path / "cache3")
    finally:
        store.client().set_model_version_tag(name, str(version), "quality_sha256", quality)
    # a damaged cached MLmodel is fetched again from the registry, not trusted and not fatal
    cached = tmp_path / "cache" / name / str(version) / "MLmodel"
    cached.write_text("not: [an MLmodel")
    assert sync(params, tmp_path / "repo4", tmp_path / "cache").changed
    assert "cifar10" in cached.read_text()


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
    answered = model.predict(pd.DataFrame({"image": [good]}))  # and it still answers
    assert len(answered) == 1 and answered["label"][0] in CLASSES


def test_the_triton_plugin_s_onnx_route_finds_the_served_file_and_can_serve_it(registered, tmp_path):
    """A version carries the ``onnx`` flavor exactly as NVIDIA's MLflow-Triton plugin reads it.

    The plugin (``mlflow-triton`` / ``mlflow-tritonserver``) pins ``mlflow<3`` and cannot be installed
    here, so this checks, without it, what its ``onnx`` route relies on (``_get_copy_paths`` in
    ``deploy/mlflow-triton-plugin/mlflow_triton/deployments.py`` of triton-inference-server/server):

    * ``Model.load(<artifacts>/MLmodel).flavors["onnx"]["data"]`` names the model file;
    * the plugin copies ``<artifacts>/<data>`` into ``<repo>/<name>/1/`` and, when the artifacts hold no
      ``config.pbtxt``, writes ``backend: "onnxruntime"`` and ``default_model_filename: "<data>"``: so
      ``data`` must be a bare file name at the root, or Triton would look for a path that is not there;
    * it copies every other ``*.txt`` but ``requirements.txt`` beside the config (ours: none).
    """
    _manifest, _cfg, rows = registered
    for row in rows:
        folder = tmp_path / row["name"]
        mlflow.artifacts.download_artifacts(f"models:/{row['name']}/{row['version']}", dst_path=str(folder))
        data = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["onnx"]["data"]
        assert "/" not in data and (folder / data).is_file()  # what default_model_filename can name
        assert not (folder / "config.pbtxt").exists()  # the plugin writes its minimal config then
        assert sorted(p.name for p in folder.glob("*.txt")) == ["requirements.txt"]
        facts = ModelFacts.from_mlmodel(folder, row["name"])
        assert sha256_file(folder / data) == facts.sha256  # the bytes the parity gate passed
        # Triton's onnxruntime backend would autocomplete the config from the file: its tensors are these
        session = ort.InferenceSession(str(folder / data), providers=["CPUExecutionProvider"])
        (tensor_in,), (tensor_out,) = session.get_inputs(), session.get_outputs()
        assert (tensor_in.name, tensor_out.name) == (facts.input.name, facts.output.name)
        x = np.zeros((2, 3, 32, 32), dtype=np.float32)
        assert session.run(None, {tensor_in.name: x})[0].shape == (2, len(facts.classes))


def test_a_version_whose_mlmodel_lost_its_facts_is_refused_and_nothing_is_written(registered, tmp_path):
    from urllib.parse import urlparse

    import yaml

    from common.params import Params, ServingConfig
    from mlmodel.facts import ModelError
    from registry import aliases
    from registry.sync import sync

    _manifest, cfg, rows = registered
    name = cfg.registered_name("fp32")
    version = next(r["version"] for r in rows if r["name"] == name)
    aliases.promote(name, "production", version)
    source = store.client().get_model_version(name, str(version)).source
    logged = store.client().get_logged_model(source.removeprefix("models:/"))
    mlmodel = Path(urlparse(logged.artifact_location).path) / "MLmodel"
    original = mlmodel.read_text()
    params = Params(profile="test", registry=cfg.replace(serve=("fp32",), ensemble_target="fp32"),
                    serving=ServingConfig(preferred_batch_sizes=(8,)))  # fmt: skip
    try:
        edited = yaml.safe_load(original)
        edited["metadata"].pop("cifar10")
        mlmodel.write_text(yaml.safe_dump(edited))
        with pytest.raises(ModelError, match="no 'cifar10' metadata"):
            sync(params, tmp_path / "repo", tmp_path / "cache")
        assert not (tmp_path / "repo").exists()
    finally:
        mlmodel.write_text(original)
