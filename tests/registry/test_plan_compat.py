"""TensorRT plans are served only on the TensorRT and GPU architecture that built them.

No TensorRT runs here: the plan's bytes are a stand-in (sync only copies them), registered through
the real registry with the build facts the export (or scripts/gpu_host_plan.py) records.
"""

from __future__ import annotations

import json
import uuid

import pytest

from common.fsutil import sha256_file
from common.params import Params, RegistryConfig, ServingConfig
from registry import aliases, plan_compat, store
from registry.plan_compat import HostFacts, PlanMismatch, check_plan, host_facts, pinned_image
from registry.sync import sync
from tests.conftest import ROOT
from tests.registry.test_sync import tree_digest

BUILT = {
    "trt_version": "10.5.0.18",
    "trt_compute_capability": "9.0",
    "trt_cuda": "12.6",
    "trt_profile": "1/128/256",
}


def test_the_pinned_ngc_image_names_the_serving_tensorrt():
    image, tag = pinned_image(ROOT / "compose.yaml")
    assert image.startswith("nvcr.io/nvidia/tritonserver:") and tag in plan_compat.NGC_TRITON
    facts = host_facts(ROOT / "compose.yaml", compute_capability="9.0")
    assert (facts.tensorrt, facts.compute_capability) == (plan_compat.NGC_TRITON[tag][0], "9.0")
    assert "compose.yaml" in facts.source and tag in facts.source


def test_an_unknown_ngc_tag_asks_for_the_version(tmp_path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  triton:\n    image: nvcr.io/nvidia/tritonserver:19.01-py3\n"
    )
    with pytest.raises(
        store.RegistryError, match=r"no TensorRT version known for NGC tag 19\.01.*--tensorrt-version"
    ):
        host_facts(tmp_path / "compose.yaml")
    assert host_facts(tmp_path / "compose.yaml", tensorrt="8.6.3.1").tensorrt == "8.6.3"


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (
            HostFacts("10.6.0", "9.0", "compose.yaml: x:24.11"),
            r"TensorRT 10\.5\.0 .* host has TensorRT 10\.6\.0",
        ),
        (HostFacts("10.5.0", "8.9", "flag"), r"compute capability 9\.0, .* compute capability 8\.9"),
        (HostFacts("10.5.0", None, "flag"), r"GPU is unknown here; pass --gpu-arch"),
    ],
)
def test_a_plan_from_another_tensorrt_or_gpu_is_refused_with_both_named(host, message):
    with pytest.raises(PlanMismatch, match=message):
        check_plan("m", 3, BUILT, host)
    check_plan("m", 3, BUILT, HostFacts("10.5.0", "9.0", "flag"))  # the same host: fine


def test_a_plan_without_build_facts_is_refused():
    with pytest.raises(PlanMismatch, match="without trt_version and trt_compute_capability"):
        check_plan("m", 1, {}, HostFacts("10.5.0", "9.0", "flag"))


@pytest.fixture
def plan_registry(registry, small_prepared):
    """A trt_fp16 version logged and registered as the export does (stand-in bytes, real registry)."""
    import mlflow

    from common.export_manifest import Artifact, ExportManifest
    from mlmodel.logged import log_form

    manifest_path, _ = registry
    copy = manifest_path.parent
    manifest = json.loads(manifest_path.read_text())
    fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32")
    plan = copy / "model.trt_fp16.plan"
    plan.write_bytes(b"a serialised engine stands here" * 64)
    art = fp32 | {"precision": "trt_fp16", "file": plan.name, "format": "tensorrt_plan", "built_on": BUILT}
    no_reference = {"quality_reference": None, "quality_sha256": None}
    art = Artifact.model_validate(art | {"sha256": sha256_file(plan)} | no_reference)
    with mlflow.start_run(run_id=manifest["mlflow_run_id"]):
        model_id = log_form(
            copy, ExportManifest.model_validate(manifest), art, small_prepared, "0" * 16, ServingConfig()
        )
    manifest["artifacts"] = [art.model_dump(mode="json") | {"model_id": model_id}]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    cfg = RegistryConfig(
        model_prefix=f"p{uuid.uuid4().hex[:8]}", serve=("trt_fp16",), ensemble_target="trt_fp16"
    )
    store.register_manifest(copy / "manifest.json", cfg)
    aliases.promote(cfg.registered_name("trt_fp16"), "production", 1)
    return Params(profile="test", registry=cfg, serving=ServingConfig(preferred_batch_sizes=(8,)))


def test_sync_serves_a_plan_only_on_its_own_tensorrt_and_gpu(plan_registry, tmp_path):
    params, repo, cache = plan_registry, tmp_path / "repo", tmp_path / "cache"
    info = aliases.resolve(params.registry.registered_name("trt_fp16"), "production")
    assert {k: info.tags[k] for k in BUILT} == BUILT  # the registry keeps what the build recorded
    assert sync(params, repo, cache, host=HostFacts("10.5.0", "9.0", "test")).changed
    assert (repo / "wrn_trt_fp16" / "1" / "model.plan").is_file()
    before = tree_digest(repo)
    with pytest.raises(PlanMismatch, match=r"TensorRT 10\.5\.0 .* host has TensorRT 10\.7\.0"):
        sync(params, repo, cache, host=HostFacts("10.7.0", "9.0", "test"))
    assert tree_digest(repo) == before  # refused before anything was written
