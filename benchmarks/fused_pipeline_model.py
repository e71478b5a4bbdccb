"""A Triton python model for :mod:`benchmarks.python_steps` only: decode, classifier (BLS), softmax.

It is the "one pipeline model" alternative to the ``cifar10`` ensemble's three steps, kept to price
that design, not to serve: it has no prediction counter, no warm-up and no release routing. It
decodes with preprocess's own :class:`Decoder` and takes postprocess's ``softmax`` (both shipped
beside it), calls the classifier once per dynamic batch through BLS and answers a labelled
``PROBABILITIES``, so the
classification extension and the ensemble's clients work unchanged.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from postprocess import softmax
from preprocess import Decoder, InvalidImage


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        params = json.loads(args["model_config"]).get("parameters", {})
        self.decoder = Decoder(params, (32, 32))
        self.model = params["target_model"]["string_value"]
        self.version = int(params["target_version"]["string_value"])

    def _classify(self, batch: np.ndarray) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.model,
            model_version=self.version,
            requested_output_names=["logits"],
            inputs=[pb_utils.Tensor("input", batch)],
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        return pb_utils.get_output_tensor_by_name(response, "logits").as_numpy()

    def execute(self, requests: list) -> list:
        images: list = [None] * len(requests)
        errors: list = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                images[i] = self.decoder.batch(pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy())
            except InvalidImage as exc:
                errors[i] = pb_utils.TritonError(f"preprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
        good = [i for i in range(len(requests)) if errors[i] is None]
        logits = self._classify(np.concatenate([images[i] for i in good])) if good else None
        responses, start = [], 0
        for i in range(len(requests)):
            if errors[i] is not None:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=errors[i]))
                continue
            rows = logits[start : start + len(images[i])]
            start += len(images[i])
            tensor = pb_utils.Tensor("PROBABILITIES", softmax(rows))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
