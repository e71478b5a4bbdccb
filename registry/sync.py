"""``sync``: the registry's aliases -> the Triton model repository (and, optionally, a live server).

What serves is decided here and only here: for every form in ``registry.serve`` the version the
``production`` alias names plus the ``staging`` version if one is set. Nothing is guessed: a form
without a ``production`` alias, or any registry failure, stops the sync before it writes anything.
Artifacts are downloaded from MLflow into a local cache and checked against the SHA-256 recorded at
registration, so a corrupted download never reaches Triton; registry tags are validated before they
name a file (:mod:`registry.tags`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow.exceptions import MlflowException

from common.config import from_dict
from common.fsutil import sha256_file
from registry import store, tags
from registry.config import RegistryConfig
from serving.spec import RepositorySpec, ServedModel, ServedVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingConfig:
    max_batch_size: int = 256
    preferred_batch_sizes: tuple[int, ...] = (8, 32, 64)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    kind: str = "KIND_CPU"
    top_k: int = 3
    max_image_bytes: int = 1 << 20
    max_image_pixels: int = 4096 * 4096


def load_serving_config(path: str | Path = "params.yaml") -> ServingConfig:
    return from_dict(ServingConfig, (yaml.safe_load(Path(path).read_text()) or {}).get("serving"))


def fetch_artifact(name: str, version: int, cache: Path) -> Path:
    """Local path of a version's artifact, downloaded once and verified against its recorded hash.

    The ``file`` and ``sha256`` tags are validated first (:mod:`registry.tags`), and every path this
    function writes or deletes is checked to lie inside ``cache/<name>/<version>``: a crafted tag
    can make the sync fail, never touch a file elsewhere.
    """
    import mlflow

    info = store.resolve(name, version=version)
    expected = tags.artifact_sha256(info.tags, name, version)
    filename = tags.artifact_file(info.tags, name, version)
    folder = (cache / name / str(version)).absolute()
    path = folder / filename
    if path.parent != folder or not path.resolve().is_relative_to(folder.resolve(strict=False)):
        raise store.RegistryError(f"{name} v{version}: artifact path {path} leaves the cache {folder}")
    if not (path.is_file() and sha256_file(path) == expected):
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
            )
        except MlflowException as exc:
            raise store.RegistryUnavailable(f"downloading {name} v{version}: {exc}") from exc
    if path.is_symlink() or not path.is_file():
        raise store.RegistryError(f"{name} v{version}: artifact {filename} missing from {info.source}")
    if sha256_file(path) != expected:
        path.unlink()
        raise store.RegistryError(
            f"{name} v{version}: downloaded {filename} does not match its registered SHA-256"
        )
    return path


def desired_spec(cfg: RegistryConfig, serving: ServingConfig, cache: Path) -> tuple[RepositorySpec, dict]:
    """The repository spec the registry's aliases call for, and a summary of what was resolved.

    Strict: a form without a ``production`` alias, a registry failure or a malformed tag raises
    before anything is written, so the repository and the server stay exactly as they were.
    """
    c = store.client()
    models, summary = [], {}
    meta: dict[str, str] = {}
    for precision in cfg.serve:
        name = cfg.registered_name(precision)
        production = store.resolve(name, "production")
        staging = store.alias_version(name, "staging")
        numbers = sorted({production.version} | ({staging} if staging else set()))
        versions = tuple(ServedVersion(v, fetch_artifact(name, v, cache)) for v in numbers)
        fmt = tags.artifact_format(production.tags, name, production.version)
        model_tags = dict(store.registered_model(c, name).tags)
        meta = meta or model_tags
        models.append(
            ServedModel(
                name=cfg.triton_name(precision),
                backend="tensorrt" if fmt == "tensorrt_plan" else "onnxruntime",
                versions=versions,
                production=production.version,
                input_name=tags.tensor_name(model_tags, "input", "input", name),
                output_name=tags.tensor_name(model_tags, "output", "logits", name),
                max_batch_size=serving.max_batch_size,
                preferred_batch_sizes=serving.preferred_batch_sizes,
                max_queue_delay_us=serving.max_queue_delay_us,
                instance_count=serving.instance_count,
                kind=serving.kind,
            )
        )
        summary[name] = {
            "triton_model": cfg.triton_name(precision),
            "production": production.version,
            "staging": staging,
        }
    spec = RepositorySpec(
        classifiers=tuple(models),
        ensemble_target=cfg.triton_name(cfg.ensemble_target),
        classes=tags.json_list(meta, "classes", "registered model"),
        mean=tags.json_list(meta, "mean", "registered model", float),
        std=tags.json_list(meta, "std", "registered model", float),
        top_k=serving.top_k,
        max_image_bytes=serving.max_image_bytes,
        max_image_pixels=serving.max_image_pixels,
    )
    spec.validate()
    return spec, summary


def sync(
    cfg: RegistryConfig,
    serving: ServingConfig,
    repository: Path,
    cache: Path,
    server_url: str | None = None,
    header: tuple[str, str] | None = None,
) -> dict:
    """Write ``repository`` from the registry; with ``server_url``, roll the live server over too."""
    from serving import control
    from serving.repository import build_repository, read_deployed_spec

    spec, summary = desired_spec(cfg, serving, cache)
    if server_url:
        phases = control.apply(server_url, read_deployed_spec(repository), spec, header, repository)
        return {"models": summary, "changed": bool(phases), "phases": phases}
    return {"models": summary, "changed": build_repository(spec, repository)}
