"""Registry commands against a real MLflow sqlite store, on real (small) exports."""

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from registry import store
from registry.config import RegistryConfig, alias_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(small_export, monkeypatch, tmp_path):
    """The small export in a private copy (so tests may tamper with it) and a unique model prefix."""
    folder, uri = small_export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    return copy / "manifest.json", RegistryConfig(model_prefix=f"t{uuid.uuid4().hex[:8]}")


def test_register_is_idempotent_and_tags_versions(registry):
    manifest, cfg = registry
    rows = store.register_manifest(manifest, cfg, {"accuracy": 0.5})
    assert [(r["name"], r["version"], r["status"]) for r in rows] == [
        (cfg.registered_name("fp32"), 1, "created"),
        (cfg.registered_name("int8"), 1, "created"),
    ]
    again = store.register_manifest(manifest, cfg)
    assert {r["status"] for r in again} == {"already registered"}
    info = store.resolve(cfg.registered_name("fp32"), version=1)
    assert info.tags["parity_passed"] == "true" and info.tags["test_accuracy"] == "0.5000"
    assert {"sha256", "run_id", "git_commit", "parity_max_abs_logit", "export_command"} <= set(info.tags)


def test_failed_artifact_is_never_registered(registry):
    manifest, cfg = registry
    data = json.loads(manifest.read_text())
    data["artifacts"][1]["passed"] = False
    data["artifacts"][1]["parity"]["failures"] = ["made to fail"]
    manifest.write_text(json.dumps(data))
    rows = store.register_manifest(manifest, cfg)
    assert rows[1] == {
        "name": cfg.registered_name("int8"),
        "version": None,
        "status": "rejected by parity gate",
    }
    with pytest.raises(store.RegistryError, match="no registered model"):
        store.describe(cfg.registered_name("int8"))


def test_tampered_artifact_is_refused(registry):
    manifest, cfg = registry
    with open(manifest.parent / "model.fp32.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(store.RegistryError, match="does not match the checksum"):
        store.register_manifest(manifest, cfg)


def test_promote_rollback_history_and_fallback(registry, caplog):
    manifest, cfg = registry
    name = cfg.registered_name("fp32")
    store.register_manifest(manifest, cfg)
    # Two more versions of the same form, as successive training runs would create.
    client = store.client()
    v1 = client.get_model_version(name, "1")
    for _ in range(2):
        client.create_model_version(
            name, v1.source, run_id=v1.run_id, tags=dict(v1.tags) | {"sha256": uuid.uuid4().hex}
        )
    with caplog.at_level("WARNING"):
        assert store.resolve(name).version == 3 and store.resolve(name).alias is None
    assert "falling back to the newest version" in caplog.text
    for v in (1, 2, 3):
        store.promote(name, "production", v)
    assert store.resolve(name, "production").version == 3
    assert store.rollback(name)["version"] == 2
    assert store.rollback(name)["version"] == 1
    with pytest.raises(store.RegistryError, match="no earlier version"):
        store.rollback(name)
    assert store.describe(name)["aliases"] == {"production": 1}
    with pytest.raises(store.RegistryError, match="has no version 9"):
        store.promote(name, "production", 9)


def test_unvalidated_version_cannot_be_promoted(registry):
    manifest, cfg = registry
    name = cfg.registered_name("fp32")
    store.register_manifest(manifest, cfg)
    v1 = store.client().get_model_version(name, "1")
    store.client().create_model_version(name, v1.source, run_id=v1.run_id, tags={"precision": "fp32"})
    with pytest.raises(store.RegistryError, match="no passed parity gate"):
        store.promote(name, "production", 2)


def test_stage_names_map_onto_aliases():
    assert alias_for(stage="Production") == "production"
    assert alias_for(stage="staging") == "staging"
    with pytest.raises(ValueError, match="has no alias"):
        alias_for(stage="Archived")
    with pytest.raises(ValueError, match="unknown alias"):
        alias_for(alias="prod")


def test_cli_promote_with_stage_and_clear_exit_codes(registry, tmp_path):
    manifest, cfg = registry
    params = tmp_path / "params.yaml"
    params.write_text(f"registry: {{model_prefix: {cfg.model_prefix}}}\n")

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "registry.cli", "--params", str(params), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )

    assert cli("register", "--manifest", str(manifest)).returncode == 0
    done = cli("promote", "--stage", "Production", "--version", "1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alias"] == "production"
    missing = cli("promote", "--precision", "fp16", "--version", "1")
    assert missing.returncode == 2 and "error:" in missing.stderr and "fp16" in missing.stderr
    assert cli("rollback").returncode == 2
