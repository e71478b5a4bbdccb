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


def repository_problem(location: Path | str) -> tuple[int, str] | None:
    """Why Triton could not serve ``location`` (exit code, one line), checked before it starts.

    For S3 this matters more than for a folder: Triton hangs without a word on a URI without
    ``host:port`` or on ``s3://https://`` against plain HTTP, so the URI's form, the endpoint's
    scheme, the credentials and the bucket are each checked here with the URI's own endpoint.
    """
    text = str(location)
    if not text.startswith("s3://"):
        if Path(text).is_dir():
            return None
        return 2, f"model repository {text} does not exist"
    from common.object_store import Bucket, ObjectStoreError
    from common.stores import S3Url, StoreError

    try:
        url = S3Url.parse(text)
        Bucket(url.endpoint, url.bucket, timeout_s=5.0, attempts=1).check()
    except StoreError as exc:
        return 2, str(exc)
    except ObjectStoreError as exc:
        message = str(exc)
        if url.tls and "SSLError" in message:
            message += f"; it speaks no TLS: write s3://{url.host}:{url.port}/... for plain HTTP"
        return exc.exit_code, message
    return None


def serve_foreground(config: ServerConfig, startup_timeout_s: float, token: str | None) -> int:
    """Start, report the endpoints, wait for a signal, stop; the exit code (0 ok, 1 failed, 2 usage).

    ``token`` unlocks the model-repository API (load/unload) behind the ``ADMIN_HEADER`` header;
    without it the API stays locked, so nothing but a rollout holding the token changes what serves.
    """
    problem = repository_problem(config.model_repository)
    if problem is not None:
        print(f"error: {problem[1]}", file=sys.stderr)
        return problem[0]
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
