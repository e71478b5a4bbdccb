"""``sync``: the registry's aliases -> the Triton model repository (and, optionally, a live server).

What serves is decided here and only here: for every form in ``registry.serve`` the version the
``production`` alias names (newest version, with a warning, if the alias is unset) plus the
``staging`` version if one is set. Artifacts are downloaded from MLflow into a local cache and
checked against the SHA-256 recorded at registration, so a corrupted download never reaches Triton.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from common.config import from_dict
from common.fsutil import sha256_file
from registry import store
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


def load_serving_config(path: str | Path = "params.yaml") -> ServingConfig:
    return from_dict(ServingConfig, (yaml.safe_load(Path(path).read_text()) or {}).get("serving"))


def fetch_artifact(name: str, version: int, cache: Path) -> Path:
    """Local path of a version's artifact, downloaded once and verified against its recorded hash."""
    import mlflow

    info = store.resolve(name, version=version)
    expected, filename = info.tags.get("sha256"), info.tags.get("file")
    if not expected or not filename:
        raise store.RegistryError(
            f"{name} v{version} lacks sha256/file tags; it was not registered by this tool"
        )
    folder = cache / name / str(version)
    path = folder / filename
    if not (path.is_file() and sha256_file(path) == expected):
        folder.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(folder))
    if not path.is_file():
        raise store.RegistryError(f"{name} v{version}: artifact {filename} missing from {info.source}")
    if sha256_file(path) != expected:
        path.unlink()
        raise store.RegistryError(
            f"{name} v{version}: downloaded {filename} does not match its registered SHA-256"
        )
    return path


def desired_spec(cfg: RegistryConfig, serving: ServingConfig, cache: Path) -> tuple[RepositorySpec, dict]:
    """The repository spec the registry's aliases call for, and a summary of what was resolved."""
    c = store.client()
    models, summary = [], {}
    meta: dict[str, str] = {}
    for precision in cfg.serve:
        name = cfg.registered_name(precision)
        production = store.resolve(name, "production")
        staging = None
        try:
            staging = int(c.get_model_version_by_alias(name, "staging").version)
        except Exception:  # no staging alias: nothing extra to serve
            staging = None
        numbers = sorted({production.version} | ({staging} if staging else set()))
        versions = tuple(ServedVersion(v, fetch_artifact(name, v, cache)) for v in numbers)
        fmt = production.tags.get("format", "onnx")
        meta = meta or dict(c.get_registered_model(name).tags)
        models.append(
            ServedModel(
                name=cfg.triton_name(precision),
                backend="tensorrt" if fmt == "tensorrt_plan" else "onnxruntime",
                versions=versions,
                production=production.version,
                input_name=meta.get("input", "input"),
                output_name=meta.get("output", "logits"),
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
            "production_alias_set": production.alias is not None,
            "staging": staging,
        }
    spec = RepositorySpec(
        classifiers=tuple(models),
        ensemble_target=cfg.triton_name(cfg.ensemble_target),
        classes=tuple(json.loads(meta["classes"])),
        mean=tuple(json.loads(meta["mean"])),
        std=tuple(json.loads(meta["std"])),
        top_k=serving.top_k,
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
