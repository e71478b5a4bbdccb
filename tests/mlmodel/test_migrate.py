"""Versions registered before MLflow Models keep serving, and `registry migrate` makes them one."""

from __future__ import annotations

import json

import mlflow
import pytest

from benchmarks.onnx_variants import register_run_files as register_old_style
from common.fsutil import sha256_file
from common.params import Params, ServingConfig
from registry import aliases, store
from registry.migrate import migrate
from registry.store import ArtifactAltered
from registry.sync import sync


def params_for(cfg) -> Params:
    return Params(profile="test", registry=cfg.replace(serve=("fp32",), ensemble_target="fp32"),
                  serving=ServingConfig(preferred_batch_sizes=(8,)))  # fmt: skip


def test_an_old_version_serves_and_migrates_with_its_bytes_figures_and_aliases(
    registry, small_prepared, tmp_path
):
    manifest_path, cfg = registry
    name = cfg.registered_name("fp32")
    old = register_old_style(manifest_path, cfg)
    aliases.promote(name, "production", old)
    params, cache = params_for(cfg), tmp_path / "cache"
    assert sync(params, tmp_path / "before", cache).changed  # the old layout serves as it did
    served = tmp_path / "before" / cfg.triton_name("fp32") / str(old) / "model.onnx"
    before = sha256_file(served)

    result = migrate(name, old, cache, small_prepared, ServingConfig())
    assert result.status == "migrated" and result.aliases == ("production",)
    new = result.new_version
    c = store.client()
    old_tags, new_mv = c.get_model_version(name, str(old)).tags, c.get_model_version(name, str(new))
    assert new_mv.source.startswith("models:/") and new_mv.tags["migrated_from"] == str(old)
    for key in ("sha256", "test_accuracy", "test_images", "parity_agreement", "quality_sha256"):
        assert new_mv.tags[key] == old_tags[key], key
    assert aliases.alias_version(name, "production") == new
    log = json.loads(c.get_registered_model(name).tags["alias_log.production"])
    assert [(e["version"], e["action"]) for e in log][-2:] == [
        (old, "promote"),
        (new, f"migrate from v{old}"),
    ]
    assert sync(params, tmp_path / "after", cache).changed
    assert sha256_file(tmp_path / "after" / cfg.triton_name("fp32") / str(new) / "model.onnx") == before
    assert (
        mlflow.pyfunc.load_model(f"models:/{name}@production").metadata.metadata["cifar10"]["sha256"]
        == (old_tags["sha256"])
    )
    assert migrate(name, old, cache, small_prepared, ServingConfig()).status == "already migrated"


def test_a_version_whose_bytes_no_export_manifest_names_is_refused(registry, small_prepared, tmp_path):
    manifest_path, cfg = registry
    name = cfg.registered_name("fp32")
    odd = register_old_style(manifest_path, cfg, file_bytes=b"not what the export wrote" * 40)
    versions = len(store.client().search_model_versions(f"name='{name}'"))
    with pytest.raises(ArtifactAltered, match="names no passed file with its SHA-256"):
        migrate(name, odd, tmp_path / "cache", small_prepared, ServingConfig())
    assert len(store.client().search_model_versions(f"name='{name}'")) == versions  # nothing registered
