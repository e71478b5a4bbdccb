"""The GPU half of a classifier's ``config.pbtxt``, as NVIDIA documents it, written as protobufs.

Applied only to ``KIND_GPU`` classifiers (``sync --kind KIND_GPU``, the compose stack):

* **ONNX through TensorRT.** ONNX Runtime's TensorRT execution provider
  (``optimization.execution_accelerators.gpu_execution_accelerator { name: "tensorrt" }``), with
  the precision, the workspace, an optimisation profile from batch 1 to the version's
  ``max_batch`` and an engine cache inside the model's folder: ONNX Runtime builds the engine on
  the serving GPU with the serving TensorRT, so it always matches, and a restart reads it back
  instead of rebuilding. Layers TensorRT refuses run on the CUDA execution provider, which the
  onnxruntime backend registers after TensorRT. ``onnx_accelerator: cuda`` leaves CUDA alone.
* **TensorRT plans.** CUDA graphs captured for each batch size the dynamic batcher prefers
  (``optimization.cuda.graph_spec``), so a preferred batch launches as one graph.
* **Both.** ``serving.instance_count`` instances on each listed GPU, and pinned host buffers for
  inputs and outputs.

The engine cache path is where the *server* sees the repository (``served_repository``: the
compose mount), not where ``sync`` writes it; :mod:`serving.repository.build` carries the cache
folder across every atomic swap, so a rollout never throws a built engine away.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from serving.repository.spec import GpuSettings, ServedModel
from serving.repository.warmup import batch_sizes


def cache_path(model: ServedModel, gpu: GpuSettings) -> str:
    return f"{gpu.served_repository.rstrip('/')}/{model.name}/{gpu.trt_cache_dir.strip('/')}"


def _shape(input_name: str, batch: int, dims: list[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in [batch, *dims])}"


def tensorrt_accelerator(model: ServedModel, gpu: GpuSettings, dims: list[int]) -> mc.ModelOptimizationPolicy:
    """ORT's TensorRT EP: precision, workspace, profile 1..max_batch (opt: largest preferred), cache."""
    accelerator = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt")
    opt = max(model.preferred_batch_sizes, default=model.max_batch_size)
    parameters = {
        "precision_mode": gpu.trt_precision,
        "max_workspace_size_bytes": str(gpu.trt_workspace_bytes),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": cache_path(model, gpu),
        "trt_profile_min_shapes": _shape(model.input_name, 1, dims),
        "trt_profile_opt_shapes": _shape(model.input_name, opt, dims),
        "trt_profile_max_shapes": _shape(model.input_name, model.max_batch_size, dims),
    }
    accelerator.parameters.update(parameters)
    policy = mc.ModelOptimizationPolicy()
    policy.execution_accelerators.gpu_execution_accelerator.append(accelerator)
    return policy


def cuda_graphs(model: ServedModel, dims: list[int]) -> mc.ModelOptimizationPolicy:
    """One CUDA graph per preferred batch size (and batch 1), for the TensorRT backend."""
    policy = mc.ModelOptimizationPolicy()
    policy.cuda.graphs = True
    for batch in batch_sizes(model.preferred_batch_sizes, model.max_batch_size):
        spec = policy.cuda.graph_spec.add(batch_size=batch)
        spec.input[model.input_name].dim.extend(dims)
    return policy


def apply_gpu(config: mc.ModelConfig, model: ServedModel, gpu: GpuSettings, dims: list[int]) -> None:
    """Turn a classifier config into its GPU form (instance groups, accelerator or graphs, pinning)."""
    del config.instance_group[:]
    config.instance_group.add(count=model.instance_count, kind=mc.ModelInstanceGroup.KIND_GPU, gpus=gpu.gpus)
    if model.backend == "onnxruntime" and gpu.onnx_accelerator == "tensorrt":
        config.optimization.MergeFrom(tensorrt_accelerator(model, gpu, dims))
    if model.backend == "tensorrt" and gpu.cuda_graphs:
        config.optimization.MergeFrom(cuda_graphs(model, dims))
    if gpu.pinned_memory:
        config.optimization.input_pinned_memory.enable = True
        config.optimization.output_pinned_memory.enable = True
