"""A TensorRT plan serves only where it was built: same TensorRT version, same GPU architecture.

A serialised engine holds kernels chosen for one GPU architecture (compute capability) by one
TensorRT release; another TensorRT refuses to deserialise it and another architecture may run the
wrong kernels or none. So every registered plan carries the facts of the machine that built it
(tags ``trt_version``, ``trt_compute_capability``, ``trt_cuda``, ``trt_profile``), and ``sync``
refuses a plan whose TensorRT version or architecture differs from the serving host's, naming both,
before the repository is written.

The serving host's TensorRT comes from the NGC image ``compose.yaml`` pins (the table below, from
NVIDIA's Triton release notes) or from ``--tensorrt-version``; its architecture from
``--gpu-arch`` or, on the host itself, ``nvidia-smi``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml

from registry.store import RegistryError

# NGC tritonserver tag -> (TensorRT, CUDA) it ships (NVIDIA Triton release notes). Extend it when the
# pin in docker/triton.Dockerfile moves; an unknown tag asks for --tensorrt-version instead.
NGC_TRITON: dict[str, tuple[str, str]] = {
    "24.08": ("10.3.0", "12.6.0"),
    "24.09": ("10.4.0", "12.6.1"),
    "24.10": ("10.5.0", "12.6.2"),
}
PLAN_TAGS = ("trt_version", "trt_compute_capability", "trt_cuda", "trt_profile")
_IMAGE = re.compile(r"^\s*FROM\s+(\S*tritonserver:(\d\d\.\d\d)\S*)", re.MULTILINE | re.IGNORECASE)


class PinnedImage(NamedTuple):
    image: str
    tag: str  # the NGC release, YY.MM


class PlanMismatch(RegistryError):
    """A registered plan that cannot run on the serving host; the message names both sides."""


@dataclass(frozen=True)
class HostFacts:
    """What decides whether a plan runs on the serving host, and where each fact came from."""

    tensorrt: str
    compute_capability: str | None
    source: str


def pinned_image(compose: Path) -> PinnedImage:
    """(image, NGC tag) of the ``triton`` service: its Dockerfile's ``FROM``, or its ``image``."""
    service = (yaml.safe_load(compose.read_text()) or {}).get("services", {}).get("triton", {})
    build = service.get("build") or {}
    if build:
        dockerfile = compose.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
        found = _IMAGE.search(dockerfile.read_text())
    else:
        found = _IMAGE.search(f"FROM {service.get('image', '')}")
    if not found:
        raise RegistryError(f"{compose}: the triton service names no NGC tritonserver image with a YY.MM tag")
    return PinnedImage(found.group(1), found.group(2))


def version_prefix(version: str) -> str:
    """``10.5.0.18`` -> ``10.5.0``: TensorRT promises nothing across patch releases either."""
    return ".".join(version.split(".")[:3])


def local_compute_capability() -> str | None:
    """The first visible GPU's compute capability (``9.0``), or ``None`` without ``nvidia-smi``."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = result.stdout.split()
    return lines[0] if result.returncode == 0 and lines else None


def host_facts(
    compose: Path = Path("compose.yaml"),
    tensorrt: str | None = None,
    compute_capability: str | None = None,
) -> HostFacts:
    """The serving host's TensorRT and GPU architecture, from the flags or the pinned image."""
    if tensorrt:
        source = "--tensorrt-version"
    else:
        image, tag = pinned_image(compose)
        if tag not in NGC_TRITON:
            raise RegistryError(
                f"{image}: no TensorRT version known for NGC tag {tag} "
                f"(known: {', '.join(NGC_TRITON)}); pass --tensorrt-version"
            )
        tensorrt, source = NGC_TRITON[tag][0], f"{compose.name}: {image}"
    return HostFacts(version_prefix(tensorrt), compute_capability or local_compute_capability(), source)


def check_plan(name: str, version: int, tags: dict[str, str], host: HostFacts) -> None:
    """Raise :class:`PlanMismatch` unless the plan was built by the host's TensorRT for its GPU."""
    missing = [t for t in ("trt_version", "trt_compute_capability") if not tags.get(t)]
    if missing:
        raise PlanMismatch(
            f"{name} v{version}: a TensorRT plan without {' and '.join(missing)}; "
            "rebuild it on the serving host (python -m scripts.gpu_host_plan) so it records them"
        )
    built = (version_prefix(tags["trt_version"]), tags["trt_compute_capability"])
    if host.compute_capability is None:
        raise PlanMismatch(
            f"{name} v{version}: built for compute capability {built[1]} with TensorRT {built[0]}, but "
            f"the serving host's GPU is unknown here; pass --gpu-arch (e.g. 9.0) or sync on that host"
        )
    if built != (host.tensorrt, host.compute_capability):
        raise PlanMismatch(
            f"{name} v{version}: built with TensorRT {built[0]} for compute capability {built[1]}, "
            f"but the serving host has TensorRT {host.tensorrt} ({host.source}) and compute capability "
            f"{host.compute_capability}; rebuild the plan there (python -m scripts.gpu_host_plan)"
        )
