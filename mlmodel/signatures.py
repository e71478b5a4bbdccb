"""The two interfaces a registered version states, in MLflow's own schema types.

* The **public contract** (``MLmodel``'s ``signature``, what ``mlflow.pyfunc`` enforces and the
  MLflow UI shows): a column ``image`` of encoded PNG/JPEG bytes in, and per image its ``label``,
  ``class_index`` and ``probabilities`` out, exactly what the served ``cifar10`` ensemble answers.
* The **tensor interface** of the served file (``input`` float32 ``[-1, 3, 32, 32]`` ->
  ``logits`` float32 ``[-1, 10]``, the names as exported): read from the ONNX graph itself, kept in
  the model's metadata (:class:`mlmodel.facts.Tensor`) and as an MLflow ``TensorSpec`` schema in
  the ``onnx`` flavor's block, because an ``MLmodel`` holds one signature and pyfunc callers need the
  public one. ``sync`` writes ``config.pbtxt`` from it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec

from mlmodel.facts import Tensor

IMAGE_COLUMN = "image"
ONNX_DTYPES = {1: "float32", 10: "float16"}  # onnx.TensorProto.FLOAT, FLOAT16


def public_signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, IMAGE_COLUMN)]),
        outputs=Schema(
            [
                ColSpec(DataType.string, "label"),
                ColSpec(DataType.long, "class_index"),
                ColSpec(Array(DataType.float), "probabilities"),
            ]
        ),
    )


def tensor_schema(input_: Tensor, output: Tensor) -> dict:
    """The served file's tensors as an MLflow signature dictionary (``ModelSignature.from_dict``)."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(input_.dtype), input_.shape, input_.name)]),
        outputs=Schema([TensorSpec(np.dtype(output.dtype), output.shape, output.name)]),
    ).to_dict()


def onnx_tensors(path: Path) -> tuple[Tensor, Tensor]:
    """The (single) input and output of an ONNX file, as its graph declares them."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(
            f"{path}: expected one input and one output, got {len(inputs)} and {len(graph.output)}"
        )

    def tensor(value) -> Tensor:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return Tensor(name=value.name, dtype=ONNX_DTYPES[t.elem_type], shape=dims)

    return tensor(inputs[0]), tensor(graph.output[0])


def input_example(images: np.ndarray):
    """A few images of the test split, PNG-encoded: the public contract's input example."""
    import pandas as pd
    from PIL import Image

    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    return pd.DataFrame({IMAGE_COLUMN: blobs})
