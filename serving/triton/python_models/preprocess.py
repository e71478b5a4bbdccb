"""Triton python model: encoded PNG/JPEG bytes -> normalised ``3 x H x W`` float32 tensor.

Runs inside Triton's python backend stub, so it imports only the stdlib, numpy, PIL and
``triton_python_backend_utils`` - never the project's packages. It is copied to
``<repository>/preprocess/1/model.py`` by :mod:`serving.repository.build`.

Input ``IMAGE`` is ``BYTES [batch, 1]``: one encoded file per batch element, any sizes mixed in one
request (Triton's common image protocol).

Decoding, resizing and the size limits (``max_bytes``, ``max_pixels``: config parameters written from
``params.yaml``'s ``serving`` section) are :mod:`image_decoding`'s, shared with the router and the
registered versions' MLflow pyfunc.

A request whose bytes do not decode gets its own INVALID_ARG error response; the other requests of the
same dynamic batch are answered normally.
"""

from __future__ import annotations

import json
import os

import triton_python_backend_utils as pb_utils

# A sibling module (serving/repository/build.py ships it beside this file; the stub puts the version
# folder on sys.path): the one decoder, shared with the router and the registered versions' pyfunc.
from image_decoding import Decoder, InvalidImage


class TritonPythonModel:
    """Decode, resize, scale to [0, 1] and normalise with the dataset mean/std from the config."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        out = pb_utils.get_output_config_by_name(config, "INPUT")
        channels, height, width = (int(d) for d in out["dims"])
        if channels != 3:
            raise ValueError(f"preprocess: output INPUT must have 3 channels, config says {out['dims']}")
        params = config.get("parameters", {})
        self.decoder = Decoder.from_config(params, (width, height))
        self.statistics = statistic_counter(params, args["model_repository"])

    def _one(self, request, counted: list) -> pb_utils.InferenceResponse:
        images, decoded = self.decoder.decoded(pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy())
        uncounted = pb_utils.get_input_tensor_by_name(request, "UNCOUNTED")  # warm-up samples only
        if uncounted is None:
            counted.append(decoded)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("INPUT", images)])

    def execute(self, requests: list) -> list:
        responses, counted = [], []
        for request in requests:
            try:
                responses.append(self._one(request, counted))
            except InvalidImage as exc:
                error = pb_utils.TritonError(f"preprocess: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            except Exception as exc:  # one broken request must not fail the whole batch
                error = pb_utils.TritonError(
                    f"preprocess: internal error: {exc!r}", pb_utils.TritonError.INTERNAL
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        if self.statistics is not None:  # queued: measured off the request path (quality_metrics.py)
            for decoded in counted:
                self.statistics[1].count(*decoded)
        return responses

    def finalize(self) -> None:
        if self.statistics is not None:
            self.statistics[0].close()


def statistic_counter(params: dict, model_folder: str):
    """The (flusher, counter) of the version this model's statistics are labelled with, or ``None``.

    ``quality_model``/``quality_version`` name it (production's classifier); without its reference
    (``quality/<model>/<version>.json``) or with ``quality_metrics`` false nothing is counted.
    """
    enabled = params.get("quality_metrics", {}).get("string_value", "false") == "true"
    if not (enabled and os.path.isdir(os.path.join(model_folder, "quality"))):
        return None  # sync shipped no reference: nothing to count against
    from quality_metrics import Flusher, StatisticCounter, load_reference

    model = params.get("quality_model", {}).get("string_value", "")
    version = params.get("quality_version", {}).get("string_value", "")
    reference = load_reference(model_folder, model, version) if enabled and model else None
    if reference is None:
        return None
    flusher = Flusher(float(params.get("metrics_flush_s", {}).get("string_value", "1.0")))
    return flusher, StatisticCounter(reference, {"model": model, "version": version}, flusher)
