"""Locate the ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel and prepare what it needs.

That is: the binary, a backend directory, the environment, and the command line (:class:`ServerConfig`).

The wheel carries Triton 2.51 with only the python backend. :func:`prepare_backend_dir` assembles a
backend directory with that backend plus our python-based ``onnxruntime`` backend, and
:func:`server_env` builds the environment the binary and its python stubs need (see
``docs/embedded-triton.md``): the wheel's bundled libraries and ``libpython`` on
``LD_LIBRARY_PATH``, and this virtual environment's ``bin`` first on ``PATH`` so the stub imports
numpy, PIL and onnxruntime from here.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from serving.repository.spec import ROUTE_KEY

TRITONSERVER_ENV = "CIFAR10_TRITONSERVER"
ORT_THREADS_ENV = "CIFAR10_ORT_THREADS"
ORT_SPINNING_ENV = "CIFAR10_ORT_SPINNING"
# When ONNX Runtime's intra-op threads busy-wait for work instead of sleeping: only while a run is in
# progress ("run"), also between runs ("always", ONNX Runtime's own default) or never ("off").
ORT_SPINNING_MODES = ("run", "always", "off")
ADMIN_HEADER = "x-cifar10-admin"
ADMIN_TOKEN_ENV = "CIFAR10_ADMIN_TOKEN"


def admin_token(token_file: Path | None) -> str | None:
    """The admin token from ``$CIFAR10_ADMIN_TOKEN`` or ``token_file``; ``None`` if neither is set."""
    if os.environ.get(ADMIN_TOKEN_ENV):
        return os.environ[ADMIN_TOKEN_ENV]
    if token_file is not None and Path(token_file).is_file():
        return Path(token_file).read_text().strip() or None
    return None


class AdminHeader(NamedTuple):
    """The header (name, token) that passes ``--*-restricted-api``; a plain pair where one is taken."""

    name: str
    value: str


def admin_header(token_file: Path | None) -> AdminHeader | None:
    """The header that unlocks a server's model-repository API, or ``None`` without a token."""
    token = admin_token(token_file)
    return AdminHeader(ADMIN_HEADER, token) if token else None


def check_spinning(mode: str) -> str:
    """``mode`` if it is one of :data:`ORT_SPINNING_MODES`; the stubs would refuse any other at load."""
    if mode not in ORT_SPINNING_MODES:
        raise ValueError(f"ort_spinning must be one of {ORT_SPINNING_MODES}, got {mode!r}")
    return mode


class TritonNotFoundError(FileNotFoundError):
    """No usable ``tritonserver`` binary (install the ``serve`` extra: ``nvidia-pytriton``)."""


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotFoundError("nvidia-pytriton is not installed; `pip install nvidia-pytriton==0.7.0`")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def find_tritonserver() -> Path:
    """The ``tritonserver`` binary: ``$CIFAR10_TRITONSERVER`` or the one inside nvidia-pytriton."""
    override = os.environ.get(TRITONSERVER_ENV)
    binary = Path(override) if override else _pytriton_root() / "bin" / "tritonserver"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise TritonNotFoundError(f"tritonserver binary not found or not executable at {binary}")
    return binary


def _libs_dir(binary: Path) -> Path:
    """``nvidia_pytriton.libs`` beside the ``pytriton`` package (bundled libtritonserver etc.)."""
    return binary.parents[3] / "nvidia_pytriton.libs"


def _stub(python_version: str | None = None) -> Path:
    """The python backend stub built for ``python_version`` (default: the running interpreter)."""
    python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    stubs = _pytriton_root() / "python_backend_stubs"
    stub = stubs / python_version / "triton_python_backend_stub"
    if not stub.is_file():
        versions = sorted((p.name for p in stubs.iterdir()), key=lambda v: tuple(map(int, v.split("."))))
        have = ", ".join(versions)
        raise TritonNotFoundError(
            f"nvidia-pytriton ships no python backend stub for Python {python_version} (it has {have}); "
            "run the server from one of those"
        )
    return stub


def prepare_backend_dir(dest: Path, python_version: str | None = None) -> Path:
    """``dest/python`` (Triton's python backend + the stub for this Python) and ``dest/onnxruntime``.

    Files are copied, not linked, so the directory stays valid if the wheel is upgraded underneath a
    running server. Returns ``dest``.
    """
    root, stub = _pytriton_root(), _stub(python_version)
    python_dir, ort_dir = Path(dest) / "python", Path(dest) / "onnxruntime"
    python_dir.mkdir(parents=True, exist_ok=True)
    ort_dir.mkdir(parents=True, exist_ok=True)
    for src in (
        root / "backends/python/libtriton_python.so",
        root / "backends/python/triton_python_backend_utils.py",
    ):
        shutil.copy2(src, python_dir / src.name)
    shutil.copy2(stub, python_dir / stub.name)
    source = resources.files("serving.triton.backends.onnxruntime").joinpath("model.py").read_bytes()
    (ort_dir / "model.py").write_bytes(source)
    return Path(dest)


def missing_libraries(binary: Path, env: dict[str, str]) -> list[str]:
    """Shared libraries ``binary`` needs that the dynamic loader cannot find under ``env``.

    Asked of the loader itself (``ldd``), so every place it searches counts: ``LD_LIBRARY_PATH``,
    the ldconfig cache (where Debian's ``libpython3.X`` package puts its library) and rpaths.
    Without ``ldd`` nothing can be said in advance and the list is empty.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    run = subprocess.run([ldd, str(binary)], env=env, capture_output=True, text=True, timeout=30)
    return [line.split("=>")[0].strip() for line in run.stdout.splitlines() if "not found" in line]


def _libpython_hint(python_version: str) -> str:
    """What to install for ``libpython<version>.so.1.0``, the way this machine's family names it."""
    if shutil.which("apt-get"):
        return f"install Debian/Ubuntu's package: apt-get install libpython{python_version}"
    if shutil.which("dnf") or shutil.which("yum"):
        return f"install python{python_version}-libs"
    return "use a Python built with --enable-shared (pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared)"


def server_env(
    binary: Path,
    ort_threads: int | None = None,
    base: dict[str, str] | None = None,
    ort_spinning: str | None = None,
) -> dict[str, str]:
    """Environment for ``tritonserver`` and the python stubs it spawns.

    The stub for the running Python links against its shared ``libpython``; a Python built without
    one (or a Debian system Python without the ``libpython3.X`` package) cannot host the python
    models. That is found here, in one line naming what to install, instead of as a model that
    fails to load with a loader error buried in Triton's log.
    """
    env = dict(os.environ if base is None else base)
    # Checked first, before anything needs the binary: an inherited value counts too, because
    # the stubs read it and a bad one would fail every classifier version at load.
    spinning = ort_spinning if ort_spinning is not None else env.get(ORT_SPINNING_ENV)
    if spinning is not None:
        check_spinning(spinning)
    libpython_dir = sysconfig.get_config_var("LIBDIR") or ""
    ld = [str(_libs_dir(binary)), libpython_dir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in ld if p)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    missing = missing_libraries(_stub(version), env)
    if missing:
        raise TritonNotFoundError(
            f"the Python {version} backend stub needs {', '.join(missing)}, which {sys.executable} "
            f"does not provide: {_libpython_hint(version)}"
        )
    # The stub takes sys.prefix from the first python3 on PATH; PYTHONPATH alone is not honoured.
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    if ort_threads is not None:
        env[ORT_THREADS_ENV] = str(ort_threads)
    if ort_spinning is not None:
        env[ORT_SPINNING_ENV] = ort_spinning
    return env


def admin_headers(header: tuple[str, str], protocol: str = "http") -> dict[str, str]:
    """The header (HTTP) or metadata (gRPC) that passes ``--*-restricted-api`` for ``header``."""
    key, value = header
    return {f"triton-grpc-protocol-{key}" if protocol == "grpc" else key: value}


ROUTE_HEADER_PATTERN = f"^{ROUTE_KEY}$"  # the release router's routing key, sent as a header


@dataclass
class ServerConfig:
    """Command-line settings of one ``tritonserver`` process.

    Attributes:
        model_repository: the repository (:func:`serving.repository.build_repository` output), or
            an ``s3://host:port/bucket/prefix`` URI (credentials from ``AWS_*`` in the environment).
        http_port, grpc_port, metrics_port, address: where Triton listens; loopback by default.
        log_file: Triton's ``--log-file`` (default: in a scratch dir that outlives the server).
        backend_dir: a directory made by :func:`prepare_backend_dir` (default: a fresh one).
        model_control_mode, load_models: explicit control with every model loaded at start-up
            (``--load-model=*``), so rollouts are driven by :mod:`serving.rollout.apply`, not by polling.
        restrict_repository_api, restricted_header: the model-repository API (index, load,
            unload) needs this ``(header, token)`` on HTTP and, as ``triton-grpc-protocol-<header>``,
            on gRPC; a plain client gets "This API is restricted". The default token is random,
            so nobody can change models until a token is configured. The token is on Triton's
            command line, i.e. visible to local users through ``ps``.
        ort_threads: ``CIFAR10_ORT_THREADS`` for the onnxruntime backend (per model instance).
        ort_spinning: ``CIFAR10_ORT_SPINNING``, when ONNX Runtime's intra-op threads busy-wait.
            ``run`` (default): while a run is in progress, so operators do not wait for sleeping
            threads to wake, and not after it (ORT's ``session.force_spinning_stop``). ONNX
            Runtime's own default, ``always``, keeps the threads spinning for a while after each
            run; on a small host that takes the cores the python steps of the same request need
            next. ``off``: never (several instances sharing few cores).
            ``benchmarks/serving_overhead.py`` measures all three.
        summary_latencies: Triton's latency summaries (p50/p90/p99 per model in ``/metrics``); the
            dashboards and alerts read them. Their cost is measured by the same benchmark.
        exit_timeout_s: how long Triton waits for in-flight requests and open connections on stop.
        extra_args: appended verbatim to the command line.
    """

    model_repository: Path | str
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"
    log_file: Path | None = None
    backend_dir: Path | None = None
    model_control_mode: str = "explicit"
    load_models: tuple[str, ...] = ("*",)
    restrict_repository_api: bool = True
    restricted_header: tuple[str, str] = field(
        default_factory=lambda: (ADMIN_HEADER, secrets.token_urlsafe(24))
    )
    ort_threads: int | None = None
    ort_spinning: str = "run"
    summary_latencies: bool = True
    log_verbose: int = 0
    exit_timeout_s: int = 30
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_spinning(self.ort_spinning)

    @property
    def repository_arg(self) -> str:
        """``--model-repository``: an ``s3://`` URI as written (Path folds its ``//``), a folder absolute."""
        text = str(self.model_repository)
        return text if text.startswith("s3://") else str(Path(text).absolute())

    def args(self, binary: Path, backend_dir: Path, log_file: Path) -> list[str]:
        key, value = self.restricted_header
        argv = [
            str(binary),
            f"--model-repository={self.repository_arg}",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            f"--metrics-config=summary_latencies={str(self.summary_latencies).lower()}",
            # The release router's sticky-routing header reaches it as a request parameter.
            f"--http-header-forward-pattern={ROUTE_HEADER_PATTERN}",
            f"--grpc-header-forward-pattern={ROUTE_HEADER_PATTERN}",
            f"--model-control-mode={self.model_control_mode}",
            f"--log-file={log_file}",
            f"--log-verbose={self.log_verbose}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]
        if self.model_control_mode == "explicit":
            argv += [f"--load-model={name}" for name in self.load_models]
        if self.restrict_repository_api:
            argv += [
                f"--http-restricted-api=model-repository:{key}={value}",
                f"--grpc-restricted-protocol=model-repository:{key}={value}",
            ]
        return argv + list(self.extra_args)
