"""Write one exported form as an MLflow Model folder: the flavor object ``Model.log`` saves with.

Layout (``mlflow.models.Model.log`` uploads it as an MLflow 3 logged model)::

    MLmodel                      flavors onnx + python_function (a plan: cifar10_tensorrt), the public
                                 signature, metadata["cifar10"] = mlmodel.facts.ModelFacts
    <file>                       the very file the parity gate passed (its SHA-256 checked here)
    quality_reference.json
    code/image_classifier.py     the pyfunc, and the served preprocess's decoder beside it
    code/image_decoding.py
    input_example.json, serving_input_example.json, requirements.txt, python_env.yaml, conda.yaml

The ``onnx`` flavor block is MLflow's own (``data``, ``onnx_version``, ``providers``), so
``mlflow.onnx.load_model`` and NVIDIA's MLflow-Triton plugin find the file; it also holds the file's
tensor signature. The file lies at the root, as ``mlflow.onnx.save_model`` puts it: the plugin copies
``flavors.onnx.data`` into a version folder and names it in ``default_model_filename``, which a
nested path would break. Both flavors name the one file. The file is copied byte for byte, never
re-serialised through ``onnx.save``, so the served bytes keep the SHA-256 the gate recorded.
"""

from __future__ import annotations

import shutil
from importlib import metadata as dist
from importlib import resources
from pathlib import Path

import numpy as np

from common.fsutil import sha256_file
from mlmodel import signatures
from mlmodel.facts import QUALITY_FILE, ModelError, ModelFacts

ONNX_FLAVOR = "onnx"
PLAN_FLAVOR = "cifar10_tensorrt"
LOADER = "image_classifier"


def code_files() -> list[str]:
    """The pyfunc and the served decoder, as files MLflow copies into the model's ``code/``."""
    decoder = resources.files("serving.triton.python_models").joinpath("image_decoding.py")
    return [str(Path(__file__).with_name(f"{LOADER}.py")), str(decoder)]


def requirements() -> list[str]:
    """What the pyfunc imports, pinned to the versions it was logged (and validated) with."""
    return [
        f"{name}=={dist.version(name)}" for name in ("mlflow", "numpy", "pandas", "pillow", "onnxruntime")
    ]


class FormModel:
    """A flavor for ``mlflow.models.Model.log``: ``save_model`` writes the folder described above."""

    __name__ = "cifar10"

    def __init__(self, facts: ModelFacts, model_file: Path, quality_file: Path | None, example: np.ndarray):
        self.facts, self.model_file, self.quality_file, self.example = (
            facts,
            model_file,
            quality_file,
            example,
        )

    def save_model(self, path: str, mlflow_model, **_ignored) -> None:
        if self.facts.format == "onnx":
            self._save_onnx(path, mlflow_model)
        else:
            self._save_plan(path, mlflow_model)
        check_files(Path(path), self.facts, "the logged model")

    def _copy_files(self, path: str) -> None:
        shutil.copyfile(self.model_file, Path(path) / self.facts.file)
        if self.quality_file is not None:
            shutil.copyfile(self.quality_file, Path(path) / QUALITY_FILE)

    def _save_onnx(self, path: str, mlflow_model) -> None:
        import mlflow.pyfunc
        import onnx

        mlflow.pyfunc.save_model(
            path,
            loader_module=LOADER,
            code_paths=code_files(),
            mlflow_model=mlflow_model,
            signature=signatures.public_signature(),
            input_example=signatures.input_example(self.example),
            pip_requirements=requirements(),
            metadata=self.facts.metadata(),
        )
        self._copy_files(path)
        mlflow_model.flavors["python_function"]["data"] = self.facts.file  # _load_pyfunc's data_path
        mlflow_model.add_flavor(
            ONNX_FLAVOR,
            onnx_version=onnx.__version__,
            data=self.facts.file,
            providers=["CPUExecutionProvider"],
            onnx_session_options=None,
            code=None,
            tensor_signature=signatures.tensor_schema(self.facts.input, self.facts.output),
        )
        mlflow_model.save(str(Path(path) / "MLmodel"))

    def _save_plan(self, path: str, mlflow_model) -> None:
        from mlflow.models import ModelSignature

        Path(path).mkdir(parents=True, exist_ok=True)
        self._copy_files(path)
        schema = signatures.tensor_schema(self.facts.input, self.facts.output)
        mlflow_model.signature = ModelSignature.from_dict(schema)
        mlflow_model.metadata = self.facts.metadata()
        mlflow_model.add_flavor(PLAN_FLAVOR, data=self.facts.file, built_on=self.facts.built_on or {})
        mlflow_model.save(str(Path(path) / "MLmodel"))


def check_files(folder: Path, facts: ModelFacts, where: str) -> None:
    """The model's served file and quality reference are the ones its facts name, byte for byte."""
    model_file = folder / facts.file
    if not model_file.is_file() or model_file.is_symlink() or sha256_file(model_file) != facts.sha256:
        raise ModelError(f"{where}: {facts.file} is missing or not the file its parity gate passed")
    if facts.quality_sha256 is not None:
        reference = folder / QUALITY_FILE
        if (
            not reference.is_file()
            or reference.is_symlink()
            or sha256_file(reference) != facts.quality_sha256
        ):
            raise ModelError(f"{where}: {QUALITY_FILE} is missing or not the registered one")
