"""Run the embedded tritonserver in the foreground until SIGINT or SIGTERM (``cifar10 serve``)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from serving.server.embedded import (
    ADMIN_HEADER,
    EmbeddedServer,
    ServerConfig,
    ServerError,
    TritonNotFoundError,
)


def serve_foreground(config: ServerConfig, startup_timeout_s: float, token: str | None) -> int:
    """Start, report the endpoints, wait for a signal, stop; the exit code (0 ok, 1 failed, 2 usage).

    ``token`` unlocks the model-repository API (load/unload) behind the ``ADMIN_HEADER`` header;
    without it the API stays locked, so nothing but a rollout holding the token changes what serves.
    """
    if not Path(config.model_repository).is_dir():
        print(f"error: model repository {config.model_repository} does not exist", file=sys.stderr)
        return 2
    if token:
        config.restricted_header = (ADMIN_HEADER, token)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = EmbeddedServer(config)
    try:
        server.start()
        server.wait_ready(startup_timeout_s)
    except (ServerError, TritonNotFoundError) as exc:
        server.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"tritonserver ready (pid {server.process.pid})", flush=True)
    print(f"  HTTP     {server.url_http}\n  gRPC     {server.url_grpc}\n  metrics  {server.url_metrics}")
    print(f"  log      {server.log_file}")
    print(f"  load/unload: {'unlocked by the admin token' if token else 'locked (no admin token set)'}")
    print("Ctrl-C or SIGTERM stops it.", flush=True)
    while not stop.wait(1.0):
        if server.process is not None and server.process.poll() is not None:
            code = server.process.returncode
            print(
                f"error: tritonserver exited on its own (code {code})\n{server.log_tail()}", file=sys.stderr
            )
            server.stop()
            return 1
    print("stopping tritonserver ...", flush=True)
    code = server.stop()
    print(f"tritonserver stopped (exit code {code})")
    return 0
