"""``python -m serving.server.cli <command>``: run and manage the embedded Triton server.

Commands are argparse sub-commands registered in :data:`COMMANDS`, so another one (``sync``, say)
is a function that adds its parser plus a handler, with no change to :func:`main`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from serving.server.embedded import (
    ADMIN_HEADER,
    EmbeddedServer,
    ServerConfig,
    ServerError,
    TritonNotFoundError,
)
from serving.server.environment import ADMIN_TOKEN_ENV, ORT_SPINNING_MODES, admin_token


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start tritonserver on a model repository and wait for SIGINT/SIGTERM")
    p.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--address", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    p.add_argument("--log-file", type=Path, default=None, help="Triton's log (default: a temp dir)")
    p.add_argument("--ort-threads", type=int, default=None, help="ONNX Runtime intra-op threads per model")
    p.add_argument(
        "--ort-spinning",
        choices=ORT_SPINNING_MODES,
        default="run",
        help="when ONNX Runtime's threads busy-wait: during a run only (default), also after it "
        "(ONNX Runtime's own default), or never",
    )
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    p.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help=f"file holding the {ADMIN_HEADER} token that unlocks model load/unload "
        f"(or set ${ADMIN_TOKEN_ENV}); without either, load/unload stays locked",
    )
    p.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    token = admin_token(args.admin_token_file)
    config = ServerConfig(
        model_repository=args.model_repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        address=args.address,
        log_file=args.log_file,
        ort_threads=args.ort_threads,
        ort_spinning=args.ort_spinning,
    )
    if token:
        config.restricted_header = (ADMIN_HEADER, token)
    if not args.model_repository.is_dir():
        print(f"error: model repository {args.model_repository} does not exist", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = EmbeddedServer(config)
    try:
        server.start()
        server.wait_ready(args.startup_timeout)
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


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_serve]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.server.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
