"""A python-based Triton backend named ``onnxruntime``: ONNX Runtime on the CPU behind Triton.

Installed as ``<backend_dir>/onnxruntime/model.py`` (see :func:`serving.server.embedded.prepare_backend_dir`),
it makes every model whose config says ``backend: "onnxruntime"`` load through Triton's python backend
with this file. The NGC container ships a native C++ backend under the same name, so one model
repository serves unchanged on the embedded CPU server and on a GPU host.

Runs inside the python backend stub: stdlib, numpy, onnxruntime and ``triton_python_backend_utils``
only. Design points:

* All requests of a dynamic batch go through ONE ``session.run`` (that is the point of batching)
  and the result is split back per request.
* A request that fails validation gets its own error response; the rest of the batch still runs.
* A missing or corrupt model file makes ``initialize`` raise, so Triton marks that version
  UNAVAILABLE and keeps serving the others.
* Intra-op threads come from ``CIFAR10_ORT_THREADS`` (default: all cores), because with several
  versions/instances loaded, each one defaulting to every core oversubscribes the CPU; when threads
  busy-wait from ``CIFAR10_ORT_SPINNING`` (the server sets it): ``run`` spins only while a run is in
  progress, ``always`` is ONNX Runtime's default (threads keep spinning after a run, taking the
  cores the python steps of the same request need next), ``off`` never spins.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

THREADS_ENV = "CIFAR10_ORT_THREADS"
SPINNING_ENV = "CIFAR10_ORT_SPINNING"
SPINNING_MODES = ("run", "always", "off")


class RequestError(ValueError):
    """A client-side problem with one request (wrong dtype/shape/batch)."""


def _threads() -> int:
    raw = os.environ.get(THREADS_ENV, "")
    try:
        return max(1, int(raw)) if raw else (os.cpu_count() or 1)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None


def _spinning() -> str:
    mode = os.environ.get(SPINNING_ENV, "") or "run"
    if mode not in SPINNING_MODES:
        raise ValueError(f"{SPINNING_ENV} must be one of {SPINNING_MODES}, got {mode!r}")
    return mode


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = _threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Spinning threads pick up each operator's work at once (faster at batch 1), but ONNX Runtime
    # keeps them spinning after the run too: CPU taken from the python steps that run next.
    spinning = _spinning()
    allow = "0" if spinning == "off" else "1"
    opts.add_session_config_entry("session.intra_op.allow_spinning", allow)
    opts.add_session_config_entry("session.inter_op.allow_spinning", allow)
    if spinning == "run":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


class TritonPythonModel:
    """One ONNX Runtime session per model instance (i.e. per stub process)."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.name = f"{args['model_name']}:{args['model_version']}"
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], str(args["model_version"]), filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"onnxruntime backend: model file for {self.name} not found: {path}")
        try:
            self.session = _session(path)
        except Exception as exc:
            raise RuntimeError(f"onnxruntime backend: cannot load {self.name} from {path}: {exc}") from exc
        self.max_batch = int(config.get("max_batch_size", 0))
        self.inputs = [
            (i["name"], pb_utils.triton_string_to_numpy(i["data_type"]), i["dims"]) for i in config["input"]
        ]
        self.outputs = [
            (o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]
        ]
        onnx_in = {i.name for i in self.session.get_inputs()}
        onnx_out = {o.name for o in self.session.get_outputs()}
        missing = [n for n, *_ in self.inputs if n not in onnx_in] + [
            n for n, _ in self.outputs if n not in onnx_out
        ]
        if missing:
            raise ValueError(
                f"onnxruntime backend: {self.name}: config names {missing} are not in the ONNX graph "
                f"(inputs {sorted(onnx_in)}, outputs {sorted(onnx_out)})"
            )

    def _validate(self, request) -> tuple[int, dict[str, np.ndarray]]:
        feeds, batch = {}, None
        for name, dtype, dims in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise RequestError(f"missing input {name!r}")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise RequestError(f"input {name!r} must be {np.dtype(dtype).name}, got {array.dtype.name}")
            shape = list(array.shape[1:] if self.max_batch else array.shape)
            expected = [int(d) for d in dims]
            if len(shape) != len(expected) or any(
                e != -1 and e != s for e, s in zip(expected, shape, strict=True)
            ):
                raise RequestError(
                    f"input {name!r} must have shape [batch, {expected}], got {list(array.shape)}"
                )
            n = int(array.shape[0]) if self.max_batch else 1
            if self.max_batch and not 1 <= n <= self.max_batch:
                raise RequestError(f"batch size {n} outside 1..{self.max_batch}")
            if batch is not None and n != batch:
                raise RequestError(f"inputs disagree on batch size ({batch} vs {n})")
            feeds[name], batch = array, n
        return batch or 1, feeds

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        valid: list[tuple[int, int, dict[str, np.ndarray]]] = []
        for idx, request in enumerate(requests):
            try:
                n, feeds = self._validate(request)
                valid.append((idx, n, feeds))
            except RequestError as exc:
                error = pb_utils.TritonError(f"{self.name}: {exc}", pb_utils.TritonError.INVALID_ARG)
                responses[idx] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            except Exception as exc:  # one broken request must not fail the whole batch
                error = pb_utils.TritonError(
                    f"{self.name}: internal error: {exc!r}", pb_utils.TritonError.INTERNAL
                )
                responses[idx] = pb_utils.InferenceResponse(output_tensors=[], error=error)
        # Non-batching models take one request per session.run; batching ones take the whole batch.
        for group in [valid] if self.max_batch else [[v] for v in valid]:
            if group:
                self._run(group, responses)
        return responses

    def _run(self, group: list, responses: list) -> None:
        names = [name for name, _ in self.outputs]
        try:
            if self.max_batch:
                feed = {name: np.concatenate([f[name] for _, _, f in group]) for name, *_ in self.inputs}
            else:
                feed = group[0][2]
            results = self.session.run(names, feed)
        except Exception as exc:
            error = pb_utils.TritonError(
                f"{self.name}: onnxruntime failed: {exc}", pb_utils.TritonError.INTERNAL
            )
            for idx, _, _ in group:
                responses[idx] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            return
        offsets = np.cumsum([0] + [n for _, n, _ in group])
        for (idx, _, _), start, stop in zip(group, offsets[:-1], offsets[1:], strict=True):
            tensors = [
                pb_utils.Tensor(
                    name, np.ascontiguousarray(out[start:stop] if self.max_batch else out, dtype=dtype)
                )
                for (name, dtype), out in zip(self.outputs, results, strict=True)
            ]
            responses[idx] = pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.session = None
