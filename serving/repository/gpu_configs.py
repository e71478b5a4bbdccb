"""The GPU half of a classifier's ``config.pbtxt``, as NVIDIA documents it, written as protobufs.

Applied only to ``KIND_GPU`` classifiers (``sync --kind KIND_GPU``, the compose stack):

* **ONNX through TensorRT.** ONNX Runtime's TensorRT execution provider
  (``optimization.execution_accelerators.gpu_execution_accelerator { name: "tensorrt" }``), with
  the precision, the workspace, an optimisation profile from batch 1 to the version's
  ``max_batch`` and an engine cache inside the model's folder, one per version and engine setting
  (:func:`cache_folders`): ONNX Runtime builds the engine on the serving GPU with the serving
  TensorRT, so it always matches, and a restart reads it back instead of rebuilding. Layers
  TensorRT refuses run on the CUDA execution provider, which the onnxruntime backend registers
  after TensorRT. ``onnx_accelerator: cuda`` leaves CUDA alone.
* **TensorRT plans.** CUDA graphs captured for each batch size the dynamic batcher prefers
  (``optimization.cuda.graph_spec``), so a preferred batch launches as one graph.
* **Both.** ``serving.instance_count`` instances on each listed GPU, and pinned host buffers for
  inputs and outputs.

The engine cache path is where the *server* sees the repository (``served_repository``: the
compose mount), not where ``sync`` writes it; :mod:`serving.repository.build` carries the cache
folders of the versions still served across every atomic swap.
"""

from __future__ import annotations

import hashlib
import json

from tritonclient.grpc import model_config_pb2 as mc

from common.params_schema import GpuServingConfig
from serving.repository.spec import ServedModel
from serving.repository.warmup import batch_sizes


def _engine_settings(model: ServedModel, gpu: GpuServingConfig, dims: list[int]) -> dict[str, str]:
    opt = max(model.preferred_batch_sizes, default=model.max_batch_size)
    return {
        "precision_mode": gpu.trt_precision,
        "max_workspace_size_bytes": str(gpu.trt_workspace_bytes),
        "trt_profile_min_shapes": _shape(model.input_name, 1, dims),
        "trt_profile_opt_shapes": _shape(model.input_name, opt, dims),
        "trt_profile_max_shapes": _shape(model.input_name, model.max_batch_size, dims),
    }


def cache_folders(model: ServedModel, gpu: GpuServingConfig, dims: list[int]) -> dict[int, str]:
    """Version -> its engine cache folder, relative to the model's folder.

    One folder per registry version (an immutable file) and per engine setting: ONNX Runtime keys a
    cached engine by the graph's structure and file name, not its weights, so two versions of one
    model sharing a folder would run each other's engines.
    """
    settings = json.dumps(_engine_settings(model, gpu, dims), sort_keys=True).encode()
    digest = hashlib.sha256(settings).hexdigest()[:10]
    return {v: f"{gpu.trt_cache_dir.strip('/')}/v{v}-{digest}" for v in model.version_numbers}


def _shape(input_name: str, batch: int, dims: list[int]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in [batch, *dims])}"


def tensorrt_accelerator(
    model: ServedModel, gpu: GpuServingConfig, dims: list[int]
) -> mc.ModelOptimizationPolicy:
    """ORT's TensorRT EP: precision, workspace, profile 1..max_batch (opt: largest preferred), cache.

    The engine cache is on only while the model serves one version (the config is the model's, so
    its one cache path would be shared by all versions); during a rollout, with two versions
    loaded, each builds its engine at load, in its warm-up.
    """
    accelerator = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(name="tensorrt")
    accelerator.parameters.update(_engine_settings(model, gpu, dims))
    folders = cache_folders(model, gpu, dims)
    if len(folders) == 1:
        (folder,) = folders.values()
        root = f"{gpu.served_repository.rstrip('/')}/{model.name}"
        accelerator.parameters.update(
            {"trt_engine_cache_enable": "1", "trt_engine_cache_path": f"{root}/{folder}"}
        )
    else:
        accelerator.parameters["trt_engine_cache_enable"] = "0"
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


def apply_gpu(config: mc.ModelConfig, model: ServedModel, gpu: GpuServingConfig, dims: list[int]) -> None:
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
