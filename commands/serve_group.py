"""``cifar10 serve``: the embedded tritonserver (from nvidia-pytriton) on a model repository."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from commands.main import ADMIN_TOKEN_FILE, PARAMS, VERBOSE
from serving.server.environment import ORT_SPINNING_MODES


@click.command()
@click.option(
    "--model-repository", default=None,
    help="a folder or s3://host:port/bucket/prefix (default: $CIFAR10_MODEL_REPOSITORY, else "
    "params.yaml stores.model_repository).",
)  # fmt: skip
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="interface to bind (0.0.0.0: all).")
@click.option(
    "--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Triton's log."
)
@click.option("--ort-threads", type=int, default=None, help="ONNX Runtime intra-op threads per model.")
@click.option(
    "--ort-spinning", type=click.Choice(ORT_SPINNING_MODES), default="run", show_default=True,
    help="when ONNX Runtime's threads busy-wait: during a run, also after it, or never.",
)  # fmt: skip
@click.option("--startup-timeout", type=float, default=300.0, show_default=True, help="seconds to readiness.")
@ADMIN_TOKEN_FILE
@PARAMS
@VERBOSE
def serve(
    model_repository: str | None,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    address: str,
    log_file: Path | None,
    ort_threads: int | None,
    ort_spinning: str,
    startup_timeout: float,
    admin_token_file: Path | None,
    params_file: Path,
) -> None:
    """Serve a model repository until Ctrl-C or SIGTERM.

    Load and unload stay locked unless an admin token is given (--admin-token-file or
    $CIFAR10_ADMIN_TOKEN): then only a rollout holding it changes what serves.

    \b
    Examples:
      cifar10 serve --model-repository model_repository --admin-token-file .triton-token
      AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        cifar10 serve --model-repository s3://127.0.0.1:9000/models/cifar10
    """
    from commands.main import repository_location
    from serving.server.embedded import ServerConfig
    from serving.server.environment import admin_token
    from serving.server.foreground import serve_foreground

    config = ServerConfig(
        model_repository=repository_location(model_repository, params_file), http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port, address=address, log_file=log_file, ort_threads=ort_threads,
        ort_spinning=ort_spinning,
    )  # fmt: skip
    sys.exit(serve_foreground(config, startup_timeout, admin_token(admin_token_file)))
