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

from __future__ import annotations

import mlflow
import numpy as np
import onnxruntime as ort

from common.fsutil import sha256_file
from mlmodel.facts import ModelFacts
from registry import store


def test_the_plugin_s_onnx_route_finds_the_served_file_and_can_serve_it(registry, tmp_path):
    manifest_path, cfg = registry
    rows = store.register_manifest(manifest_path, cfg)
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
