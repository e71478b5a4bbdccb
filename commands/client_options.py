"""The options ``cifar10 client`` subcommands share, each defined once, read into typed values.

:func:`server_options` (where the server is, how long to wait) hands a command one
:class:`ServerConnection`; :func:`request_options` (how the images are sent) one
:class:`RequestOptions`, which builds the library's :class:`~client.jobs.folder_batch.BatchConfig`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from client.core.errors import EXIT_CODES_HELP
from client.core.request_loop import DEFAULT_REQUEST_BATCH
from commands.epilog import exit_codes_epilog
from commands.main import VERBOSE

if TYPE_CHECKING:
    from client.jobs.folder_batch import BatchConfig

ENV_HTTP, ENV_GRPC, ENV_METRICS = "TRITON_HTTP_URL", "TRITON_GRPC_URL", "TRITON_METRICS_URL"
DEFAULT_HTTP, DEFAULT_GRPC = "localhost:8000", "localhost:8001"
DEFAULT_METRICS = "http://localhost:8002/metrics"

EPILOG = exit_codes_epilog(EXIT_CODES_HELP)


class IntList(click.ParamType):
    """``1,2,4``: comma-separated positive integers, as a tuple."""

    name = "ints"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            values = tuple(int(x) for x in value.split(",") if x.strip())
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)
        if not values or min(values) < 1:
            self.fail(f"expected positive integers, got {value!r}", param, ctx)
        return values


class ChoiceList(click.ParamType):
    """``a,b``: comma-separated names out of ``allowed``, as a tuple."""

    name = "choices"

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        values = tuple(x.strip() for x in value.split(",") if x.strip())
        if not values or any(v not in self.allowed for v in values):
            self.fail(f"choose from {','.join(self.allowed)}, got {value!r}", param, ctx)
        return values


@dataclass(frozen=True)
class ServerConnection:
    """``--url``, ``--grpc-url``, ``--timeout``, ``--request-timeout``."""

    url: str
    grpc_url: str
    timeout: float
    request_timeout: float


@dataclass(frozen=True)
class RequestOptions:
    """How ``batch`` and ``offline-eval`` send their images."""

    protocol: str
    mode: str
    concurrency: int
    retry_deadline: float
    max_rps: float | None
    request_batch: int
    metrics_url: str
    top_k: int
    progress: bool

    def batch_config(self, server: ServerConnection, **over: Any) -> BatchConfig:
        """The library's run settings; ``over``: fields the command sets itself (model, version)."""
        from client.core.request_loop import RetryPolicy
        from client.core.transport import Endpoint
        from client.jobs.folder_batch import BatchConfig

        return BatchConfig(
            endpoint=Endpoint(self.protocol, server.url, server.grpc_url, server.request_timeout),
            mode=self.mode,
            concurrency=self.concurrency,
            retry=RetryPolicy(deadline_s=self.retry_deadline),
            connect_timeout_s=server.timeout,
            metrics_url=self.metrics_url or None,
            top_k=self.top_k,
            max_rps=self.max_rps,
            progress=self.progress,
            request_batch=self.request_batch,
            **over,
        )


def _env(name: str, default: str) -> Callable[[], str]:
    return lambda: os.environ.get(name, default)  # read when the command runs, as argparse did


def _bundle(options: list, make: Callable[[dict], tuple[str, Any]], names: tuple[str, ...]):
    """A decorator adding ``options`` whose values reach the command as one typed keyword."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key, value = make({name: kwargs.pop(name) for name in names})
            return fn(*args, **{key: value}, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


server_options = _bundle(
    [
        click.option(
            "--url", default=_env(ENV_HTTP, DEFAULT_HTTP),
            help=f"HTTP endpoint host:port (env {ENV_HTTP}; default {DEFAULT_HTTP})",
        ),
        click.option(
            "--grpc-url", default=_env(ENV_GRPC, DEFAULT_GRPC),
            help=f"gRPC endpoint host:port (env {ENV_GRPC}; default {DEFAULT_GRPC})",
        ),
        click.option(
            "--timeout", type=float, default=10.0,
            help="seconds to wait for the server to answer before giving up with exit code 3",
        ),
        click.option("--request-timeout", type=float, default=30.0, help="seconds one request may take"),
        VERBOSE,
    ],
    lambda v: ("server", ServerConnection(**v)),
    ("url", "grpc_url", "timeout", "request_timeout"),
)  # fmt: skip

request_options = _bundle(
    [
        click.option("--protocol", type=click.Choice(("http", "grpc")), default="http"),
        click.option(
            "--mode", type=click.Choice(("bytes", "tensor")), default="bytes",
            help="bytes: encoded files through the ensemble; tensor: preprocess here, send to a classifier",
        ),
        click.option("--concurrency", "-c", type=int, default=8, help="requests in flight (default 8)"),
        click.option(
            "--retry-deadline", type=float, default=60.0,
            help="retry transient failures (restart, timeout, 503/UNAVAILABLE) for this many seconds "
            "per image",
        ),
        click.option("--max-rps", type=float, default=None, help="cap on request starts per second"),
        click.option(
            "--request-batch", type=int, default=DEFAULT_REQUEST_BATCH,
            help=f"images per request, up to the model's max_batch_size (default {DEFAULT_REQUEST_BATCH}); "
            "a request that one bad image fails is retried image by image, so only that image is "
            "reported as failed",
        ),
        click.option(
            "--metrics-url", default=_env(ENV_METRICS, DEFAULT_METRICS),
            help="Prometheus endpoint snapshotted before and after ('' to skip)",
        ),
        click.option(
            "--top-k", type=int, default=3, help="classes kept per prediction (bytes: Triton's class_count)"
        ),
        click.option("--no-progress", is_flag=True, help="no progress bar"),
    ],
    lambda v: ("sending", RequestOptions(progress=not v.pop("no_progress"), **v)),
    ("protocol", "mode", "concurrency", "retry_deadline", "max_rps", "request_batch", "metrics_url",
     "top_k", "no_progress"),
)  # fmt: skip
