"""A registry version's files on local disk, downloaded once and verified, in either layout.

``sync``, the release's baseline and the GPU host's plan builder read versions through here. Every
file is checked against the SHA-256 recorded at registration before anything uses it, every path
written or deleted must lie inside the cache folder (a crafted tag can fail a fetch, never touch a
file elsewhere), and a version that is an MLflow Model has its facts read and its tags checked
against them (:mod:`mlmodel.facts`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from mlflow.exceptions import MlflowException

from common.export_manifest import QUALITY_REFERENCE_FILE as QUALITY_FILE
from common.fsutil import sha256_file
from mlmodel.facts import ModelError, ModelFacts, mismatches
from registry import aliases, store, tags


def fetch_artifact(name: str, version: int, cache: Path) -> Path:
    """Local path of a version's artifact, downloaded once and verified against its recorded hash.

    The ``file`` and ``sha256`` tags are validated first (:mod:`registry.tags`), and every path this
    function writes or deletes is checked to lie inside ``cache/<name>/<version>``: a crafted tag
    can make the sync fail, never touch a file elsewhere.
    """
    return fetch_model(name, version, cache).artifact


class Fetched(NamedTuple):
    """A version's verified local files, and its MLflow Model's facts (``None``: registered before)."""

    artifact: Path
    quality_reference: Path | None
    facts: ModelFacts | None


def fetch_model(name: str, version: int, cache: Path) -> Fetched:
    """A version's files, verified, in either layout the registry holds.

    A version registered from ``models:/<model_id>`` is an MLflow Model: its ``MLmodel`` states its
    facts (:mod:`mlmodel.facts`), which every tag that repeats one must match (a mismatch is refused,
    both values named). A version registered from a
    run's folder (before versions were MLflow Models) is the file alone. Either way the file and the
    quality reference are verified against their recorded SHA-256: a version never serves with a
    reference that is not the one registered with it.
    """
    import mlflow

    info = aliases.resolve(name, version=version)
    where = f"{name} v{version}"
    expected = tags.artifact_sha256(info.tags, name, version)
    filename = tags.artifact_file(info.tags, name, version)
    quality_sha = tags.quality_sha256(info.tags, name, version)
    tags.artifact_format(info.tags, name, version)
    folder = (cache / name / str(version)).absolute()
    is_model = str(info.source or "").startswith("models:/")
    path = folder / filename  # an MLflow Model keeps it at its root too, beside MLmodel
    reference = folder / QUALITY_FILE if quality_sha else None
    if path.parent != folder or not path.resolve().is_relative_to(folder.resolve(strict=False)):
        raise store.ArtifactAltered(f"{where}: artifact path {path} leaves the cache {folder}")

    def intact(file: Path | None, sha: str | None) -> bool:
        return file is None or (file.is_file() and not file.is_symlink() and sha256_file(file) == sha)

    def download() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
            )
        except MlflowException as exc:
            raise store.RegistryUnavailable(f"downloading {where}: {exc}") from exc

    described = not is_model or (folder / "MLmodel").is_file()
    cached = described and intact(path, expected) and intact(reference, quality_sha)
    if not cached:
        download()
    for file, sha, what in ((path, expected, filename), (reference, quality_sha, QUALITY_FILE)):
        if file is None:
            continue
        if file.is_symlink() or not file.is_file():
            raise store.RegistryError(f"{where}: {what} missing from {info.source}")
        if sha256_file(file) != sha:
            file.unlink()
            raise store.RegistryError(f"{where}: downloaded {what} does not match its registered SHA-256")
    facts = None
    if is_model:
        try:
            facts = ModelFacts.from_mlmodel(folder, where)
        except ModelError:
            if not cached:
                raise
            (folder / "MLmodel").unlink(missing_ok=True)  # a damaged cached copy: the registry's, once
            download()
            facts = ModelFacts.from_mlmodel(folder, where)
        problems = mismatches(facts, info.tags)
        if problems:
            raise ModelError(f"{where}: its tags contradict its MLflow Model: " + "; ".join(problems))
    return Fetched(path, reference, facts)
