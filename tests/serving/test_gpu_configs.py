"""GPU configs and warm-up samples as written, parsed back through Triton's own protobufs (no server).

No GPU and no TensorRT run here: these check that what ``sync --kind KIND_GPU`` writes is exactly
NVIDIA's documented form, and that the repository keeps ORT's engine cache across rollouts.
"""

from __future__ import annotations

import dataclasses
import struct
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image
from tritonclient.grpc import model_config_pb2 as mc

from common.params import GpuServingConfig as GpuSettings  # the one model of serving.gpu
from serving.repository.build import build_repository
from serving.repository.model_configs import parse
from serving.repository.spec import ServedVersion, spec_from_dict, spec_to_dict
from serving.repository.warmup import IMAGE_FILE, ROUTE_FILE, WARMUP_DIR
from tests.serving.conftest import CLASSIFIER, make_spec

GPU = GpuSettings(served_repository="/triton/model_repository", gpus=(0, 1))


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[int, Path]:
    out = {}
    for v in (1, 2):
        out[v] = tmp_path / "registry" / f"v{v}.onnx"
        out[v].parent.mkdir(exist_ok=True)
        out[v].write_bytes(f"model version {v}".encode() * 100)
    return out


def gpu_spec(artifacts, production=1, gpu=GPU, **kw):
    """A GPU spec serving the production version alone (as between rollouts)."""
    spec = make_spec({production: artifacts[production]}, production, gpu=gpu, **kw)
    model = dataclasses.replace(spec.classifiers[0], kind="KIND_GPU", instance_count=2)
    return dataclasses.replace(spec, classifiers=(model,))


def config_of(repo: Path, name: str) -> mc.ModelConfig:
    return parse((repo / name / "config.pbtxt").read_text())


def test_an_onnx_classifier_on_a_gpu_runs_through_ort_tensorrt_with_a_cache_in_its_folder(
    tmp_path, artifacts
):
    build_repository(gpu_spec(artifacts), tmp_path / "repo")
    config = config_of(tmp_path / "repo", CLASSIFIER)
    group = config.instance_group[0]
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 2, [0, 1])
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    params = dict(accelerator.parameters)
    cache = params.pop("trt_engine_cache_path")
    assert params == {
        "precision_mode": "FP16",
        "max_workspace_size_bytes": str(1 << 30),
        "trt_engine_cache_enable": "1",
        "trt_profile_min_shapes": "input:1x3x32x32",
        "trt_profile_opt_shapes": "input:8x3x32x32",  # the largest preferred batch (make_spec: 4, 8)
        "trt_profile_max_shapes": "input:256x3x32x32",
    }
    # Inside the model's folder, where the container sees it, one folder for this version's engines.
    assert cache.startswith(f"/triton/model_repository/{CLASSIFIER}/trt_cache/v1-")
    assert config.optimization.input_pinned_memory.enable and config.optimization.output_pinned_memory.enable
    assert not config.optimization.cuda.graphs  # graphs are the TensorRT backend's
    # Decoding stays on the CPU.
    assert config_of(tmp_path / "repo", "preprocess").instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU


def test_cuda_alone_when_asked(tmp_path, artifacts):
    build_repository(gpu_spec(artifacts, gpu=GPU.replace(onnx_accelerator="cuda")), tmp_path / "r")
    config = config_of(tmp_path / "r", CLASSIFIER)
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


def test_a_tensorrt_plan_gets_a_cuda_graph_per_preferred_batch_size(tmp_path, artifacts):
    spec = gpu_spec(artifacts)
    plan = dataclasses.replace(spec.classifiers[0], backend="tensorrt")
    build_repository(dataclasses.replace(spec, classifiers=(plan,)), tmp_path / "repo")
    config = config_of(tmp_path / "repo", CLASSIFIER)
    assert config.platform == "tensorrt_plan" and config.optimization.cuda.graphs
    graphs = config.optimization.cuda.graph_spec
    assert [g.batch_size for g in graphs] == [1, 4, 8]
    assert all(list(g.input["input"].dim) == [3, 32, 32] for g in graphs)
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


def test_cpu_configs_carry_no_gpu_settings(tmp_path, artifacts):
    build_repository(make_spec(artifacts, 1, gpu=GPU), tmp_path / "repo")  # KIND_CPU classifiers
    config = config_of(tmp_path / "repo", CLASSIFIER)
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert not config.optimization.ListFields()


def _cache(repo: Path) -> dict[str, str]:
    (accelerator,) = config_of(repo, CLASSIFIER).optimization.execution_accelerators.gpu_execution_accelerator
    return dict(accelerator.parameters)


def test_each_version_has_its_own_engine_cache_and_keeps_it_across_rollouts(tmp_path, artifacts):
    """ORT keys a cached engine by graph and file name, not weights: versions must never share one."""
    repo = tmp_path / "repo"
    build_repository(gpu_spec(artifacts, production=1), repo)
    v1_path = _cache(repo)["trt_engine_cache_path"]
    v1_folder = repo / CLASSIFIER / v1_path.removeprefix(f"/triton/model_repository/{CLASSIFIER}/")
    engine = v1_folder / "TensorrtExecutionProvider_TRTKernel_graph_1.engine"
    engine.parent.mkdir(parents=True)
    engine.write_bytes(b"an engine ORT built on this GPU from version 1")
    inode = engine.stat().st_ino
    assert build_repository(gpu_spec(artifacts, production=1), repo) is False  # nothing new: untouched

    # A rollout serves versions 1 and 2 side by side: one config, so no shared cache at all.
    both = dataclasses.replace(
        gpu_spec(artifacts, production=1).classifiers[0],
        versions=(ServedVersion(1, artifacts[1]), ServedVersion(2, artifacts[2])),
        production=2,
    )
    assert build_repository(dataclasses.replace(gpu_spec(artifacts), classifiers=(both,)), repo) is True
    assert _cache(repo)["trt_engine_cache_enable"] == "0" and "trt_engine_cache_path" not in _cache(repo)
    assert engine.stat().st_ino == inode  # version 1 is still served: its engines are kept

    # Version 2 alone: its own folder; version 1's engines are not carried into it.
    only_v2 = dataclasses.replace(both, versions=(ServedVersion(2, artifacts[2]),))
    build_repository(dataclasses.replace(gpu_spec(artifacts), classifiers=(only_v2,)), repo)
    v2_path = _cache(repo)["trt_engine_cache_path"]
    assert v2_path != v1_path and "/trt_cache/v2-" in v2_path
    assert not engine.exists() and not (repo / CLASSIFIER / "trt_cache" / v1_folder.name).exists()

    # Other engine settings (precision) mean another folder: an FP32 engine is not an FP16 one.
    fp32 = dataclasses.replace(gpu_spec(artifacts, production=1), gpu=GPU.replace(trt_precision="FP32"))
    build_repository(fp32, repo)
    assert _cache(repo)["trt_engine_cache_path"] != v1_path


def test_gpu_settings_round_trip_through_the_stored_spec(artifacts):
    spec = gpu_spec(artifacts)
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_a_gpu_classifier_without_gpu_settings_gets_the_documented_defaults(tmp_path, artifacts):
    build_repository(gpu_spec(artifacts, gpu=None), tmp_path / "repo")
    config = config_of(tmp_path / "repo", CLASSIFIER)
    assert list(config.instance_group[0].gpus) == list(GpuSettings().gpus)
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["precision_mode"] == GpuSettings().trt_precision


def test_every_classifier_and_python_model_has_warmup_samples(tmp_path, artifacts):
    repo = tmp_path / "repo"
    build_repository(make_spec(artifacts, 1), repo)
    sizes = {"batch_1": 1, "batch_4": 4, "batch_8": 8}
    assert {w.name: w.batch_size for w in config_of(repo, CLASSIFIER).model_warmup} == sizes
    # Zeros: Triton's random_data is random bytes, NaN and Inf included as FP32.
    assert all(w.inputs["input"].zero_data for w in config_of(repo, CLASSIFIER).model_warmup)
    assert all(w.inputs["LOGITS"].zero_data for w in config_of(repo, "postprocess").model_warmup)
    (pre, post) = config_of(repo, "preprocess"), config_of(repo, "postprocess")
    assert [w.batch_size for w in pre.model_warmup] == [w.batch_size for w in post.model_warmup] == [1, 4, 8]
    assert {w.inputs["IMAGE"].input_data_file for w in pre.model_warmup} == {IMAGE_FILE}
    assert {w.inputs["ROUTE"].input_data_file for w in post.model_warmup} == {ROUTE_FILE}
    # One batch element per file; a string element is a 4-byte length, then a real JPEG.
    blob = (repo / "preprocess" / WARMUP_DIR / IMAGE_FILE).read_bytes()
    (length,) = struct.unpack("<I", blob[:4])
    assert length == len(blob) - 4
    with Image.open(BytesIO(blob[4:])) as image:
        assert (image.format, image.size) == ("JPEG", (32, 32))
    assert struct.unpack("<i", (repo / "postprocess" / WARMUP_DIR / ROUTE_FILE).read_bytes()) == (-1,)


def test_warmup_can_stop_at_a_batch_size(tmp_path, artifacts):
    repo = tmp_path / "repo"
    build_repository(make_spec(artifacts, 1, warmup_max_batch=4), repo)
    for model in (CLASSIFIER, "preprocess", "postprocess"):
        assert [w.batch_size for w in config_of(repo, model).model_warmup] == [1, 4]


def test_warmup_can_be_switched_off(tmp_path, artifacts):
    repo = tmp_path / "repo"
    build_repository(make_spec(artifacts, 1, warmup=False), repo)
    assert not any(config_of(repo, m).model_warmup for m in (CLASSIFIER, "preprocess", "postprocess"))
    assert not (repo / "preprocess" / WARMUP_DIR).exists()


def test_two_gpu_classifiers_never_share_a_cache(tmp_path, artifacts):
    spec = gpu_spec(artifacts)
    other = dataclasses.replace(
        spec.classifiers[0], name="wrn_int8", versions=(ServedVersion(1, artifacts[1]),), production=1
    )
    build_repository(dataclasses.replace(spec, classifiers=(spec.classifiers[0], other)), tmp_path / "repo")
    paths = {
        m: config_of(tmp_path / "repo", m)
        .optimization.execution_accelerators.gpu_execution_accelerator[0]
        .parameters["trt_engine_cache_path"]
        for m in (CLASSIFIER, "wrn_int8")
    }
    assert all(path.startswith(f"/triton/model_repository/{m}/trt_cache/v1-") for m, path in paths.items())
