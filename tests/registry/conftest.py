"""What the registry tests share: a private copy of the small export in the session's MLflow store."""

from __future__ import annotations

import shutil
import uuid

import pytest

from common.params import RegistryConfig


@pytest.fixture
def registry(small_export, monkeypatch, tmp_path):
    """The small export in a private copy (so tests may tamper with it) and a unique model prefix."""
    folder, uri = small_export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    copy = tmp_path / "export"
    shutil.copytree(folder, copy)
    return copy / "manifest.json", RegistryConfig(model_prefix=f"t{uuid.uuid4().hex[:8]}")
