"""The registered versions' MLflow pyfunc: encoded images in, label, class index and probabilities out.

``mlflow.pyfunc.load_model("models:/cifar10-wrn-fp32@production")`` imports this file from the
model's ``code/`` folder (``_load_pyfunc`` is MLflow's loader-module protocol), beside
``image_decoding.py``, the very decoder the served ``preprocess`` runs. So it imports only what an
MLflow scoring process has plus numpy, PIL and ONNX Runtime, never this project's packages: the model
works wherever MLflow does, ``mlflow models serve --env-manager local`` included.

The answer matches the served ``cifar10`` ensemble: probabilities are the softmax of the logits,
the label the class of the largest. A TensorRT version has no pyfunc (it runs only on the GPU it was
built for); its MLflow Model has the tensor signature and no ``python_function`` flavor.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from image_decoding import Decoder, InvalidImage  # beside this file in the model's code/ folder

IMAGE_COLUMN = "image"


class ImageClassifier:
    """One ONNX Runtime session and the served decoder, configured from the model's metadata."""

    def __init__(self, model_file: str, facts: dict) -> None:
        import onnxruntime as ort

        height, width = facts["input"]["shape"][2:4]
        self.decoder = Decoder(
            tuple(facts["mean"]),
            tuple(facts["std"]),
            (width, height),
            facts["resample"],
            facts["max_image_pixels"],
            facts["max_image_bytes"],
        )
        self.classes = list(facts["classes"])
        self.input, self.output = facts["input"]["name"], facts["output"]["name"]
        self.max_batch = int(facts["max_batch"])
        options = ort.SessionOptions()
        threads = os.environ.get("CIFAR10_PYFUNC_THREADS")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])

    def predict(self, model_input, params=None) -> pd.DataFrame:
        column = _images(model_input)
        batch = np.empty((len(column), 1), dtype=object)
        batch[:, 0] = list(column)
        try:
            x = self.decoder.batch(batch)
        except InvalidImage as exc:
            raise _bad_input(f"{exc} (send PNG or JPEG bytes in the {IMAGE_COLUMN!r} column)") from None
        logits = (
            np.concatenate(
                [
                    self.session.run([self.output], {self.input: x[i : i + self.max_batch]})[0]
                    for i in range(0, len(x), self.max_batch)
                ]
            )
            if len(x)
            else np.empty((0, len(self.classes)), dtype=np.float32)
        )
        z = logits.astype(np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        probabilities = (z / z.sum(axis=1, keepdims=True)).astype(np.float32)
        index = probabilities.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [self.classes[i] for i in index],
                "class_index": index.astype(np.int64),
                "probabilities": list(probabilities),
            }
        )


def _images(model_input):
    """The encoded images of a pyfunc input: a DataFrame's ``image`` column, or a list of bytes."""
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            columns = list(model_input.columns)
            raise _bad_input(f"the input needs an {IMAGE_COLUMN!r} column of encoded images, got {columns}")
        return model_input[IMAGE_COLUMN]
    if isinstance(model_input, dict) and IMAGE_COLUMN in model_input:
        return list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, list | tuple | np.ndarray | pd.Series):
        return list(model_input)
    raise _bad_input(
        f"expected encoded images in an {IMAGE_COLUMN!r} column, got {type(model_input).__name__}"
    )


def _bad_input(message: str) -> Exception:
    """The caller's mistake, as MLflow reports one: ``mlflow models serve`` answers it with a 400."""
    from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _load_pyfunc(data_path: str, model_config=None) -> ImageClassifier:
    """MLflow's loader protocol: ``data_path`` is the served file, at the root beside ``MLmodel``."""
    from mlflow.models import Model

    facts = Model.load(os.path.dirname(os.path.abspath(data_path))).metadata["cifar10"]
    return ImageClassifier(data_path, facts)
