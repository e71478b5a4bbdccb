"""Registry commands against a real MLflow sqlite store, on real (small) exports."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from registry import aliases, catalog, store
from registry.aliases import alias_for
from tests.conftest import add_version

ROOT = Path(__file__).resolve().parents[2]


def test_register_is_idempotent_and_tags_versions(registry):
    manifest, cfg = registry
    rows = store.register_manifest(manifest, cfg)
    assert [(r["name"], r["version"], r["status"]) for r in rows] == [
        (cfg.registered_name("fp32"), 1, "created"),
        (cfg.registered_name("int8"), 1, "created"),
    ]
    again = store.register_manifest(manifest, cfg)
    assert {r["status"] for r in again} == {"already registered"}
    data = json.loads(manifest.read_text())
    for art in data["artifacts"]:
        info = aliases.resolve(cfg.registered_name(art["precision"]), version=1)
        assert info.tags["parity_passed"] == "true"
        # each version carries what its own artifact scored at export, not a training-run figure
        assert info.tags["test_accuracy"] == f"{art['test']['accuracy']:.4f}"
        assert info.tags["test_images"] == str(art["test"]["images"]) and art["test"]["images"] > 0
        assert info.tags["test_runtime"].startswith("onnxruntime ")
        assert {"sha256", "run_id", "git_commit", "parity_max_abs_logit", "export_command"} <= set(info.tags)
        # what the release gate compares like with like: the class list and the exact scored images
        assert json.loads(info.tags["classes"]) == data["classes"]
        assert info.tags["test_digest"] == art["test"]["digest"] and len(art["test"]["digest"]) == 16
        assert json.loads(info.tags["test_class_precision"]) == art["test"]["class_precision"]
    shown = catalog.describe(cfg.registered_name("int8"))["versions"][0]
    assert shown["test_accuracy"] == f"{data['artifacts'][1]['test']['accuracy']:.4f}"
    # exported from a weights file, not a training run of this pipeline: named with its hash
    assert shown["source"] == {
        "kind": "weights file",
        "file": "small.safetensors",
        "sha256": data["source"]["sha256"],
    }
    assert shown["parity_passed"] and shown["alias_periods"] == []


def test_a_version_without_a_measured_accuracy_says_unknown(registry):
    manifest, cfg = registry
    data = json.loads(manifest.read_text())
    for art in data["artifacts"]:
        art.pop("test")  # a manifest written before exports measured their artifacts
    manifest.write_text(json.dumps(data))
    store.register_manifest(manifest, cfg)
    row = catalog.describe(cfg.registered_name("fp32"))["versions"][0]
    assert row["test_accuracy"] == "unknown" and row["test_images"] is None


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
        catalog.describe(cfg.registered_name("int8"))


def test_tampered_artifact_is_refused(registry):
    manifest, cfg = registry
    with open(manifest.parent / "model.fp32.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(store.RegistryError, match="does not match the checksum"):
        store.register_manifest(manifest, cfg)


def test_promote_rollback_history_and_fallback_only_when_asked(registry, caplog):
    manifest, cfg = registry
    name = cfg.registered_name("fp32")
    store.register_manifest(manifest, cfg)
    # Two more versions of the same form, as successive training runs would create.
    for _ in range(2):
        add_version(name, sha256=uuid.uuid4().hex * 2)
    with pytest.raises(store.RegistryError, match="has no alias 'production'"):
        aliases.resolve(name)  # strict: whoever changes what serves never gets a guess
    with caplog.at_level("WARNING"):
        newest = aliases.resolve(name, allow_newest=True)
    assert newest.version == 3 and newest.alias is None
    assert "falling back to the newest version" in caplog.text
    for v in (1, 2, 3):
        aliases.promote(name, "production", v)
    assert aliases.resolve(name, "production").version == 3
    assert aliases.rollback(name)["version"] == 2
    assert aliases.rollback(name)["version"] == 1
    with pytest.raises(store.RegistryError, match="no earlier version"):
        aliases.rollback(name)
    shown = catalog.describe(name)
    assert shown["aliases"] == {"production": 1}
    # The stack forgot v3 and v2; the log still says when each one served and what ended it.
    periods = {
        row["version"]: [(p["by"], p["ended_by"]) for p in row["alias_periods"]] for row in shown["versions"]
    }
    assert periods == {
        1: [("promote", "promote"), ("rollback", None)],
        2: [("promote", "promote"), ("rollback", "rollback")],
        3: [("promote", "rollback")],
    }
    with pytest.raises(store.RegistryError, match="has no version 9"):
        aliases.promote(name, "production", 9)
    assert aliases.alias_version(name, "staging") is None


def test_a_failed_record_puts_the_alias_and_its_history_back(registry, monkeypatch):
    """Registry error between moving the alias and logging it: nothing is left half-written."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    manifest, cfg = registry
    name = cfg.registered_name("fp32")
    store.register_manifest(manifest, cfg)
    client = store.client()
    add_version(name)
    aliases.promote(name, "production", 1)
    before = client.get_registered_model(name)
    real = MlflowClient.set_registered_model_tag

    def fail_on_log(self, model, key, value):
        if key.startswith("alias_log."):
            raise MlflowException("injected: the tracking server failed this write")
        return real(self, model, key, value)

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", fail_on_log)
    with pytest.raises(store.RegistryUnavailable, match="injected"):
        aliases.promote(name, "production", 2)
    monkeypatch.undo()
    after = client.get_registered_model(name)
    assert after.aliases == before.aliases == {"production": 1}
    assert after.tags == before.tags


def test_history_follows_an_alias_moved_by_hand(registry):
    """The alias is the truth; a history tag that lags it (someone used the MLflow UI) is completed."""
    manifest, cfg = registry
    name = cfg.registered_name("fp32")
    store.register_manifest(manifest, cfg)
    client = store.client()
    add_version(name)
    aliases.promote(name, "production", 1)
    client.set_registered_model_alias(name, "production", "2")  # not through promote
    assert aliases.rollback(name) == {
        "name": name,
        "alias": "production",
        "version": 1,
        "rolled_back_from": 2,
    }


def test_registry_errors_are_not_mistaken_for_missing_things(tmp_path, monkeypatch):
    """An unreachable tracking server is RegistryUnavailable (exit 3), never "no alias" or a guess."""
    from tests.client.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    for call in (
        lambda: aliases.resolve("cifar10-wrn-fp32"),
        lambda: aliases.resolve("cifar10-wrn-fp32", allow_newest=True),
        lambda: aliases.promote("cifar10-wrn-fp32", "production", 1),
        lambda: aliases.rollback("cifar10-wrn-fp32"),
    ):
        with pytest.raises(store.RegistryUnavailable, match="registry error while"):
            call()


def test_unvalidated_version_cannot_be_promoted(registry):
    manifest, cfg = registry
    name = cfg.registered_name("fp32")
    store.register_manifest(manifest, cfg)
    v1 = store.client().get_model_version(name, "1")
    store.client().create_model_version(name, v1.source, run_id=v1.run_id, tags={"precision": "fp32"})
    with pytest.raises(store.RegistryError, match="no passed parity gate"):
        aliases.promote(name, "production", 2)


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
            [sys.executable, "-m", "commands", "registry", "--params", str(params), *args],
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
    # the project-wide exit codes: 5 = no such model, version or alias
    assert missing.returncode == 5 and "error:" in missing.stderr and "fp16" in missing.stderr
    assert cli("rollback").returncode == 5


def test_cli_exit_3_when_the_registry_is_unreachable(tmp_path):
    from tests.client.conftest import free_port

    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_REGISTRY_URI"},  # set by earlier tests
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "commands", "registry", "--params", str(ROOT / "params.yaml"), "rollback"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: registry error while")


def test_list_and_show_print_tables_for_people_and_json_on_request(registry):
    manifest, cfg = registry
    store.register_manifest(manifest, cfg)
    name = cfg.registered_name("fp32")
    aliases.promote(name, "production", 1)
    prefix = {"model_prefix": cfg.model_prefix}
    params = manifest.parent / "params.yaml"
    params.write_text(
        (ROOT / "params.yaml")
        .read_text()
        .replace("model_prefix: cifar10-wrn", f"model_prefix: {prefix['model_prefix']}")
    )

    def cli(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "commands", "registry", "--params", str(params), *args],
            capture_output=True, text=True, timeout=120, env=os.environ | {"COLUMNS": "220"},
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout

    listed = cli("list")
    assert name in listed and cfg.registered_name("int8") in listed
    shown = cli("show", "--model", name)
    row = next(line for line in shown.splitlines() if line.strip().startswith("1 "))
    accuracy = float(aliases.resolve(name, version=1).tags["test_accuracy"])
    assert "production" in row and f"{100 * accuracy:.2f} %" in row and "passed" in row
    assert "small.safetensors (sha256" in row and "(promote) → now" in row
    assert "production: now v1; rollback goes to nothing" in shown
    assert json.loads(cli("show", "--model", name, "--json"))["versions"][0]["aliases"] == ["production"]
    assert [m["name"] for m in json.loads(cli("list", "--json"))] == [name, cfg.registered_name("int8")]
