"""One asyncio interface over Triton's HTTP and gRPC clients, and one taxonomy of their errors.

The two protocols fail differently for the same cause: a restarting server shows up as
``aiohttp.ClientConnectorError`` over HTTP but ``UNAVAILABLE: failed to connect`` over gRPC, a draining
one as a dropped connection or ``UNAVAILABLE: Server is stopping``. :func:`classify` turns all of
them into one ``kind`` plus a *transient* flag, which is what the retry logic needs to know.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from client.core.errors import ServerUnreachable

PROTOCOLS = ("http", "grpc")
_TRANSIENT_STATUS = {
    "503": "unavailable",
    "StatusCode.UNAVAILABLE": "unavailable",
    "502": "unavailable",
    "504": "timeout",
    "408": "timeout",
    "StatusCode.DEADLINE_EXCEEDED": "timeout",
    "429": "overloaded",
    "StatusCode.RESOURCE_EXHAUSTED": "overloaded",
}
_PERMANENT_STATUS = {
    "400": "invalid_argument",
    "StatusCode.INVALID_ARGUMENT": "invalid_argument",
    "404": "not_found",
    "StatusCode.NOT_FOUND": "not_found",
    "500": "internal",
    "StatusCode.INTERNAL": "internal",
    "501": "unsupported",
    "StatusCode.UNIMPLEMENTED": "unsupported",
}
# Whatever the status code says, these messages mean "the server is going away or not there yet".
_TRANSIENT_TEXT = {
    "failed to connect": "connection_refused",
    "connection refused": "connection_refused",
    "server is stopping": "unavailable",
    # A known model with nothing loaded: Triton says so (NOT_FOUND) while it shuts down or reloads.
    "has no available versions": "unavailable",
    "connection reset": "disconnected",
    "socket closed": "disconnected",
    "stream removed": "disconnected",
    "broken pipe": "disconnected",
}


def strip_scheme(url: str) -> str:
    """``http://host:port/`` -> ``host:port`` (tritonclient rejects a scheme)."""
    return url.split("://", 1)[-1].rstrip("/")


@dataclass(frozen=True)
class Endpoint:
    """Where the server is and how long one request may take."""

    protocol: str = "http"
    http_url: str = "localhost:8000"
    grpc_url: str = "localhost:8001"
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")

    @property
    def url(self) -> str:
        return strip_scheme(self.http_url if self.protocol == "http" else self.grpc_url)


@dataclass(frozen=True)
class ErrorInfo:
    kind: str
    transient: bool
    message: str


def classify(exc: BaseException) -> ErrorInfo:
    """Map any exception from a request to ``(kind, transient, one-line message)``."""
    from tritonclient.utils import InferenceServerException

    text = " ".join(str(exc).split()) or type(exc).__name__
    lowered = text.lower()
    for needle, kind in _TRANSIENT_TEXT.items():
        if needle in lowered:
            return ErrorInfo(kind, True, text)
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        if status in _TRANSIENT_STATUS:
            return ErrorInfo(_TRANSIENT_STATUS[status], True, text)
        return ErrorInfo(_PERMANENT_STATUS.get(status, f"server_error_{status or 'unknown'}"), False, text)
    if isinstance(exc, TimeoutError):
        return ErrorInfo("timeout", True, text)
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aiohttp ships with tritonclient[http]
        aiohttp = None
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return ErrorInfo("connection_refused", True, text)
        if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
            return ErrorInfo("disconnected", True, text)
    if isinstance(exc, ConnectionRefusedError):
        return ErrorInfo("connection_refused", True, text)
    if isinstance(exc, ConnectionError):
        return ErrorInfo("disconnected", True, text)
    return ErrorInfo(f"client_{type(exc).__name__}", False, text)


Prediction = tuple[list[str], list[float], int]  # top-k labels, their probabilities, top-1 index


def image_batch(blobs: list[bytes]) -> np.ndarray:
    """Encoded files as the ensemble's ``IMAGE``: ``BYTES [n, 1]``, one file per batch element."""
    arr = np.empty((len(blobs), 1), dtype=np.object_)
    arr[:, 0] = blobs
    return arr


def parse_classification(row) -> Prediction:
    """One row of classification-extension results ("score:index:label", best first)."""
    entries = [(x.decode() if isinstance(x, bytes) else str(x)).split(":", 2) for x in row]
    labels = [label for _, _, label in entries]
    return labels, [float(score) for score, _, _ in entries], int(entries[0][1])


class AsyncTriton:
    """A tritonclient asyncio client for one protocol; create it inside the running event loop."""

    def __init__(self, endpoint: Endpoint, conn_limit: int = 100) -> None:
        self.endpoint = endpoint
        if endpoint.protocol == "http":
            import tritonclient.http as mod
            import tritonclient.http.aio as aio

            self._client: Any = aio.InferenceServerClient(
                endpoint.url, conn_limit=max(1, conn_limit), conn_timeout=endpoint.request_timeout_s
            )
            self._kw: dict[str, Any] = {}
        else:
            import tritonclient.grpc as mod
            import tritonclient.grpc.aio as aio

            keep = mod.KeepAliveOptions()
            options = [
                ("grpc.max_send_message_length", mod.MAX_GRPC_MESSAGE_SIZE),
                ("grpc.max_receive_message_length", mod.MAX_GRPC_MESSAGE_SIZE),
                ("grpc.keepalive_time_ms", keep.keepalive_time_ms),
                ("grpc.keepalive_timeout_ms", keep.keepalive_timeout_ms),
                # Reconnect quickly after a server restart (gRPC's default backoff grows to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ]
            self._client = aio.InferenceServerClient(endpoint.url, channel_args=options)
            self._kw = {"client_timeout": endpoint.request_timeout_s}
        self._mod = mod

    async def live(self) -> bool:
        return bool(await self._client.is_server_live())

    async def model_ready(self, name: str, version: int | str = "") -> bool:
        """Whether ``name`` (at ``version``) is READY; an unknown model is simply not ready.

        Transient failures (server going away) still raise, so callers do not mistake an outage for
        a missing model.
        """
        from tritonclient.utils import InferenceServerException

        try:
            return bool(await self._client.is_model_ready(name, str(version)))
        except InferenceServerException as exc:
            if classify(exc).transient:
                raise
            return False

    async def model_config(self, name: str) -> dict:
        """The model's config as a dict; int64 fields are ints for both protocols."""
        if self.endpoint.protocol == "http":
            return await self._client.get_model_config(name)
        return (await self._client.get_model_config(name, as_json=True))["config"]

    async def model_versions(self, name: str) -> list[int]:
        """Versions the server reports for ``name`` (its metadata lists the loaded ones)."""
        if self.endpoint.protocol == "http":
            meta = await self._client.get_model_metadata(name)
        else:
            meta = await self._client.get_model_metadata(name, as_json=True)
        return sorted(int(v) for v in meta.get("versions", []))

    async def infer_images(
        self, model: str, blobs: list[bytes], k: int = 3, version: int | str = ""
    ) -> list[Prediction]:
        """Encoded images, one per batch element of one request (Triton's common image protocol).

        The top ``k`` come from the classification extension on ``PROBABILITIES``: the server ranks
        and labels them ("score:index:label"), so the client needs no class list of its own.
        """
        arr = image_batch(blobs)
        inp = self._mod.InferInput("IMAGE", list(arr.shape), "BYTES")
        inp.set_data_from_numpy(arr)
        out = self._mod.InferRequestedOutput("PROBABILITIES", class_count=k)
        result = await self._client.infer(model, [inp], model_version=str(version), outputs=[out], **self._kw)
        return [parse_classification(row) for row in result.as_numpy("PROBABILITIES")]

    async def infer_bytes(self, model: str, data: bytes, version: int | str = "", k: int = 3) -> Prediction:
        """One encoded image -> (top-k labels, top-k probabilities, class index)."""
        return (await self.infer_images(model, [data], k, version))[0]

    async def infer_tensor(
        self,
        model: str,
        x: np.ndarray,
        version: int | str = "",
        input_name: str = "input",
        output_name: str = "logits",
    ) -> np.ndarray:
        """A ``[N, 3, 32, 32]`` float32 batch straight to a classifier -> ``[N, classes]`` logits."""
        batch = x if x.ndim == 4 else x[None]
        inp = self._mod.InferInput(input_name, list(batch.shape), "FP32")
        inp.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        out = self._mod.InferRequestedOutput(output_name)
        result = await self._client.infer(model, [inp], model_version=str(version), outputs=[out], **self._kw)
        return result.as_numpy(output_name)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncTriton:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def wait_live(client: AsyncTriton, timeout_s: float) -> None:
    """Poll the liveness endpoint until it answers or ``timeout_s`` passes (then exit code 3)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        try:
            if await asyncio.wait_for(client.live(), timeout=max(0.05, remaining)):
                return
            last = "server not live"
        except Exception as exc:  # every failure here means "not reachable (yet)"
            last = classify(exc).message
        if time.monotonic() + 0.2 >= deadline:
            raise ServerUnreachable(
                f"{client.endpoint.protocol} server at {client.endpoint.url} unreachable "
                f"after {timeout_s:g} s: {last[:200]}"
            )
        await asyncio.sleep(0.2)
