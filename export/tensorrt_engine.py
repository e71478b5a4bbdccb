"""TensorRT fp16 plan from the fp32 ONNX file, built only where TensorRT and a CUDA GPU exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.onnx_io import INPUT_NAME, OUTPUT_NAME


def availability() -> str | None:
    """None when a plan can be built here, else the reason it cannot (printed as the skip message)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT step skipped: the `tensorrt` Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "TensorRT step skipped: no CUDA GPU is visible to PyTorch"
    return None


def profile_batches(max_batch: int) -> tuple[int, int, int]:
    """The plan's optimisation profile over the batch axis: (min, opt, max)."""
    return 1, max(1, max_batch // 2), max_batch


def build_facts(max_batch: int) -> dict[str, str]:
    """What decides where a plan built here can run, recorded on it (registry tags ``trt_*``)."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {
        "trt_version": trt.__version__,
        "trt_compute_capability": f"{major}.{minor}",
        "trt_cuda": torch.version.cuda or "",
        "trt_profile": "/".join(str(b) for b in profile_batches(max_batch)),
        "trt_gpu": torch.cuda.get_device_name(),
    }


def build_plan(onnx_path: Path, plan_path: Path, max_batch: int, fp16: bool = True) -> Path:
    """Parse the ONNX graph and build a serialised engine with one profile for batch 1..max_batch."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    opt = profile_batches(max_batch)[1]
    profile.set_shape(INPUT_NAME, (1, 3, 32, 32), (opt, 3, 32, 32), (max_batch, 3, 32, 32))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.write_bytes(bytes(serialized))
    return plan_path


def run_plan(plan_path: Path, x: np.ndarray, max_batch: int) -> np.ndarray:
    """Logits from a plan, in batches of at most ``max_batch``, through PyTorch-owned CUDA buffers."""
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()
    outs = []
    for i in range(0, len(x), max_batch):
        inp = torch.from_numpy(np.ascontiguousarray(x[i : i + max_batch])).cuda()
        context.set_input_shape(INPUT_NAME, tuple(inp.shape))
        out = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(INPUT_NAME, inp.data_ptr())
        context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed for {plan_path}")
        stream.synchronize()
        outs.append(out.cpu().numpy())
    return np.concatenate(outs)


def runtime_name() -> str:
    import tensorrt as trt
    import torch

    return f"tensorrt {trt.__version__} on {torch.cuda.get_device_name()}"
