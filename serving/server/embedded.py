"""Start and stop a real ``tritonserver`` (from the ``nvidia-pytriton`` wheel) as a child process.

:class:`ServerConfig` is the command line, :class:`EmbeddedServer` the process: it prepares a backend
directory and environment (:mod:`serving.server.environment`), starts Triton in its own session under
:mod:`serving.server.supervisor`, waits for ``/v2/health/ready`` and stops it with SIGTERM, then SIGKILL.

Nothing outlives its owner: the supervisor kills every python stub once Triton has exited (even by
SIGKILL), and stops Triton when the process that started it dies (a pipe it holds reaches EOF),
whichever way it died. Stubs left by a server whose supervisor was itself SIGKILLed are reaped at
the next start. Explicit model control with every
model loaded at start-up, and the model-repository API locked behind a header, are the defaults: a
plain client can infer but not load or unload models; :mod:`serving.rollout.apply` sends the header.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from serving.server import supervisor
from serving.server.environment import (
    ADMIN_HEADER,
    ORT_THREADS_ENV,
    TRITONSERVER_ENV,
    ServerConfig,
    TritonNotFoundError,
    admin_headers,
    find_tritonserver,
    prepare_backend_dir,
    server_env,
)

__all__ = [
    "ADMIN_HEADER",
    "ORT_THREADS_ENV",
    "TRITONSERVER_ENV",
    "EmbeddedServer",
    "ServerConfig",
    "ServerError",
    "TritonNotFoundError",
    "admin_headers",
    "find_tritonserver",
    "prepare_backend_dir",
    "server_env",
]


log = logging.getLogger(__name__)
SCRATCH_PREFIX = "cifar10-triton-"


class ServerError(RuntimeError):
    """The server failed to start, died, or did not become ready in time; carries the log tail."""


class EmbeddedServer:
    """A ``tritonserver`` child process: ``with EmbeddedServer(cfg) as server: server.url_http``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen | None = None  # the supervisor; Triton is its only child
        self._scratch: Path | None = None
        self._lifeline: int | None = None  # write end of the supervisor's stdin: closed when we die
        self.log_file = Path(config.log_file) if config.log_file else None
        self.server_id = f"cifar10-{secrets.token_hex(6)}"

    @property
    def url_http(self) -> str:
        return f"http://{self.config.address}:{self.config.http_port}"

    @property
    def http_endpoint(self) -> str:
        """``host:port`` as ``tritonclient.http`` expects it (it rejects a scheme)."""
        return f"{self.config.address}:{self.config.http_port}"

    @property
    def url_grpc(self) -> str:
        """``host:port`` as ``tritonclient.grpc`` expects it (no scheme)."""
        return f"{self.config.address}:{self.config.grpc_port}"

    @property
    def url_metrics(self) -> str:
        return f"http://{self.config.address}:{self.config.metrics_port}/metrics"

    @property
    def admin_headers(self) -> dict[str, str]:
        """HTTP headers that unlock the model-repository API on this server."""
        return admin_headers(self.config.restricted_header, "http")

    @property
    def admin_headers_grpc(self) -> dict[str, str]:
        """gRPC metadata that unlocks it: Triton expects the key prefixed ``triton-grpc-protocol-``."""
        return admin_headers(self.config.restricted_header, "grpc")

    def start(self) -> EmbeddedServer:
        if self.process is not None:
            raise ServerError("server already started")
        binary = find_tritonserver()
        env = server_env(binary, self.config.ort_threads, ort_spinning=self.config.ort_spinning)
        if self.config.repository_arg.startswith("s3://") and not env.get("AWS_REGION"):
            env.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # Triton's S3 client needs one; any works
        stale = supervisor.reap_orphaned_stubs(f"/{SCRATCH_PREFIX}")
        if stale:
            log.warning("killed %d python stub(s) orphaned by an earlier server: %s", len(stale), stale)
        self._scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
        backend_dir = self.config.backend_dir or prepare_backend_dir(self._scratch / "backends")
        self.log_file = self.log_file or self._scratch / "tritonserver.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        console = self.log_file.with_name(self.log_file.name + ".console")
        argv = [*self.config.args(binary, backend_dir, self.log_file), f"--id={self.server_id}"]
        grace = self.config.exit_timeout_s + 10.0
        read_end, self._lifeline = os.pipe()
        os.set_inheritable(self._lifeline, False)
        try:
            with open(console, "wb") as out:  # start-up failures print here before the log file opens
                self.process = subprocess.Popen(
                    [
                        sys.executable,
                        supervisor.__file__,
                        f"--pid-file={self._pid_file}",
                        f"--grace={grace}",
                        "--",
                        *argv,
                    ],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=read_end,
                    start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop Triton in order
                )
        finally:
            os.close(read_end)
        return self

    @property
    def _pid_file(self) -> Path:
        return Path(self._scratch or tempfile.gettempdir()) / "tritonserver.pid"

    @property
    def triton_pid(self) -> int | None:
        """The ``tritonserver`` process itself (the supervisor is :attr:`process`), once it started."""
        if self._scratch is None:
            return None
        try:
            return int(self._pid_file.read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for path in (
            self.log_file,
            self.log_file and self.log_file.with_name(self.log_file.name + ".console"),
        ):
            if path and Path(path).is_file():
                text = Path(path).read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(no log written)"

    def is_ready(self) -> bool:
        """Ready, and really this process answering.

        Checking the server id matters: while a server that lost the race for its port is still
        starting up (it exits once it fails to bind), the port's owner would answer the probe.
        """
        try:
            with urllib.request.urlopen(f"{self.url_http}/v2", timeout=2) as resp:
                if json.load(resp).get("name") != self.server_id:
                    return False
            with urllib.request.urlopen(f"{self.url_http}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> EmbeddedServer:
        """Block until ``/v2/health/ready`` answers 200; raise :class:`ServerError` with the log tail."""
        if self.process is None:
            raise ServerError("server not started")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode}\n{self.log_tail()}"
                )
            if self.is_ready():
                return self
            time.sleep(0.2)
        hint = ""
        if self.config.repository_arg.startswith("s3://"):
            hint = (
                " (the repository is in S3: Triton waits without a word on an endpoint that does not "
                "answer S3 at the URI's host:port, or s3://https:// against plain HTTP)"
            )
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s{hint}\n{self.log_tail()}")

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL the whole process group after ``grace`` seconds; returns the exit code.

        On SIGTERM Triton finishes in-flight requests and waits (up to ``exit_timeout_s``) for open
        HTTP keep-alive connections, so close clients first for a quick stop. ``grace`` defaults to
        that timeout plus 10 s. The code is Triton's (128 + signal if it was killed).
        """
        grace = self.config.exit_timeout_s + 10.0 if grace is None else grace
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=grace + 5.0)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # supervisor, Triton and every stub
                    proc.wait()
            code = proc.returncode
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self._scratch is not None:
            # The backend copies go; the scratch dir itself stays only when it holds the only log.
            shutil.rmtree(self._scratch / "backends", ignore_errors=True)
            if self.config.log_file is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        return code

    def __enter__(self) -> EmbeddedServer:
        self.start()
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free a moment ago (bound all at once, so never the same twice).

    For tests and benchmarks that start servers side by side; a port can still be taken between
    this call and the server's bind, which :meth:`EmbeddedServer.wait_ready` detects.
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def private_config(repository: Path, workdir: Path, **kw: object) -> ServerConfig:
    """A server of one's own: free ports, a fresh admin token, its log under ``workdir``.

    For benchmarks and the optimizer, which start a server beside any other on the host.
    """
    http, grpc, metrics = free_ports(3)
    settings: dict = {
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "log_file": Path(workdir) / "tritonserver.log",
        "restricted_header": (ADMIN_HEADER, secrets.token_hex(8)),
        "exit_timeout_s": 3,
    }
    return ServerConfig(model_repository=repository, **(settings | kw))
