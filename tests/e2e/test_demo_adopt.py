"""The demo never demotes a better model: it promotes a new version only through the release gate.

A real MLflow sqlite store and real (small) exports; versions with other accuracies are registered
the way later pipeline runs would register them (same artifact, their own measured-accuracy tags).
"""

from __future__ import annotations

import shutil
import uuid

import pytest
from rich.console import Console

from common.params import RegistryConfig, ReleaseConfig
from registry import aliases, store
from scripts.demo_adopt import adopt
from scripts.demo_map import render
from tests.conftest import add_version

MARGIN = ReleaseConfig().accuracy_margin


@pytest.fixture
def registered(small_export, monkeypatch, tmp_path):
    folder, uri = small_export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    shutil.copytree(folder, tmp_path / "export")
    cfg = RegistryConfig(model_prefix=f"d{uuid.uuid4().hex[:8]}")
    store.register_manifest(tmp_path / "export" / "manifest.json", cfg)
    return cfg.registered_name("fp32")


def new_version(name: str, accuracy: float) -> int:
    """Another version of ``name`` as a later pipeline run registers it, scoring ``accuracy``."""
    return add_version(name, sha256=uuid.uuid4().hex * 2, test_accuracy=f"{accuracy:.4f}")


def test_the_first_run_promotes_and_a_rerun_changes_nothing(registered):
    first = adopt(registered, 1, ReleaseConfig())
    assert first.promoted and first.production_before is None
    assert aliases.alias_version(registered, "production") == 1
    again = adopt(registered, 1, ReleaseConfig())
    assert not again.promoted and again.production == 1 and again.line().endswith("production already is v1")


def test_a_worse_version_leaves_production_and_says_why_in_one_line(registered):
    c = store.client()
    c.set_model_version_tag(registered, "1", "test_accuracy", "0.9370")  # as the reference weights score
    aliases.promote(registered, "production", 1)
    worse = new_version(registered, 0.6780)  # what the cpu profile reaches
    decision = adopt(registered, worse, ReleaseConfig())
    assert not decision.promoted and decision.production == 1
    assert aliases.alias_version(registered, "production") == 1
    line = decision.line()
    assert "\n" not in line and "production stays v1" in line and "accuracy" in line
    assert "0.6780" in line and "0.9370" in line and f"margin {MARGIN}" in line


def test_a_version_within_the_margin_is_promoted(registered):
    c = store.client()
    c.set_model_version_tag(registered, "1", "test_accuracy", "0.9000")
    aliases.promote(registered, "production", 1)
    close = new_version(registered, 0.9000 - MARGIN / 2)
    decision = adopt(registered, close, ReleaseConfig())
    assert decision.promoted and decision.production_before == 1
    assert aliases.alias_version(registered, "production") == close
    assert aliases.rollback(registered)["version"] == 1  # the history allows going back


def test_a_release_in_progress_decides_production_not_the_demo(registered):
    from registry import release_record

    aliases.promote(registered, "production", 1)
    candidate = new_version(registered, 0.99)
    record = release_record.ReleaseRecord(
        registered, candidate, registered, 1, step="shadow", shadow_fraction=0.5
    )
    release_record.write(record)
    decision = adopt(registered, candidate, ReleaseConfig())
    assert not decision.promoted and "release" in decision.reason
    assert aliases.alias_version(registered, "production") == 1


def test_the_map_names_accuracy_endpoints_ui_reports_and_next_commands(registered, tmp_path):
    (tmp_path / "reports/offline_eval").mkdir(parents=True)
    (tmp_path / "reports/offline_eval/metrics.json").write_text(
        '{"accuracy": 0.9324, "tested_samples": 1000, "registered_model": "cifar10-wrn-fp32", '
        '"model_version": 2, "triton_model": "cifar10", "failed_samples": 0}'
    )
    decision = adopt(registered, 1, ReleaseConfig())
    endpoints = {"HTTP": "http://127.0.0.1:8000", "gRPC": "grpc://127.0.0.1:8001"}
    console = Console(record=True, width=160)
    console.print(render([decision], endpoints, "sqlite:///x/mlflow.db", still_serving=False, root=tmp_path))
    text = console.export_text()
    assert "93.24 % on 1,000 test images" in text and "cifar10-wrn-fp32 v2" in text
    assert "http://127.0.0.1:8000" in text and "grpc://127.0.0.1:8001" in text
    assert "mlflow ui --port 5000 --backend-store-uri sqlite:///x/mlflow.db" in text
    assert (
        "reports/offline_eval/metrics.json" in text and "reports/export.json" not in text
    )  # only what exists
    # the map names the one command (it named the cifar10-* scripts before issue 25)
    for command in ("make serve", "cifar10 client batch", "cifar10 registry list", "cifar10 release"):
        assert command in text
