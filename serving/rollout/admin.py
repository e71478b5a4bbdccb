"""The model-repository API of a running Triton (index, load, unload) over gRPC, with the admin header.

gRPC, not HTTP: Triton's HTTP frontend serves a blocking ``load`` on one of its worker threads,
and every keep-alive client connection pinned to that thread then waits for the whole load (we
measured seconds of stalled inference for some clients while an unrelated model loaded). Over gRPC
the same loads leave HTTP and gRPC inference latency untouched.
"""

from __future__ import annotations

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serving.repository.generation import loaded_generation
from serving.server.environment import admin_headers


class AdminError(RuntimeError):
    """Triton refused or failed a model-repository call; the message is Triton's."""


def _endpoint(url: str) -> str:
    return url.split("://", 1)[-1].rstrip("/")


class ModelAdmin:
    """Load, unload and list models; ``header`` is the server's ``restricted_header`` (or None)."""

    def __init__(self, url: str, header: tuple[str, str] | None, timeout_s: float) -> None:
        self.client = grpcclient.InferenceServerClient(_endpoint(url))
        self.headers = admin_headers(header, "grpc") if header else None
        self.timeout_s = timeout_s

    def load(self, name: str) -> None:
        try:
            self.client.load_model(name, headers=self.headers, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise AdminError(f"loading {name!r} failed: {exc.message()}") from exc

    def unload(self, name: str) -> None:
        try:
            self.client.unload_model(name, headers=self.headers, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise AdminError(f"unloading {name!r} failed: {exc.message()}") from exc

    def generation(self, name: str) -> str | None:
        """The generation of the config ``name`` was loaded with; None if not loaded (or unstamped).

        Raises:
            AdminError: the server does not answer, or not in time.
        """
        try:
            config = self.client.get_model_config(
                name, headers=self.headers, as_json=True, client_timeout=self.timeout_s
            )
        except InferenceServerException as exc:
            # A server that answers and has no such model: the READY check says why, with Triton's
            # reason. Anything else (gone, timed out) must not read as "still the previous config".
            if exc.status() != "StatusCode.DEADLINE_EXCEEDED" and self.live():
                return None
            raise AdminError(f"reading {name!r}'s config failed: {exc.message()}") from exc
        return loaded_generation(config.get("config", {}))

    def ready(self, timeout_s: float = 5.0) -> bool:
        """Whether the server answers and says it is ready (every loaded model available)."""
        try:
            return bool(self.client.is_server_ready(headers=self.headers, client_timeout=timeout_s))
        except InferenceServerException:
            return False

    def live(self, timeout_s: float = 5.0) -> bool:
        """Whether the server answers at all (it may be loading, hence not ready)."""
        try:
            return bool(self.client.is_server_live(headers=self.headers, client_timeout=timeout_s))
        except InferenceServerException:
            return False

    def index(self, timeout_s: float | None = None) -> list[dict]:
        """Triton's repository index as it lists it: a version reloaded in place appears twice."""
        try:
            index = self.client.get_model_repository_index(
                headers=self.headers, as_json=True, client_timeout=timeout_s or self.timeout_s
            )
        except InferenceServerException as exc:
            raise AdminError(f"cannot read the model repository index: {exc.message()}") from exc
        return index.get("models", [])

    def states(self, timeout_s: float | None = None) -> dict[tuple[str, int], tuple[str, str]]:
        """``(model, version) -> (state, reason)`` for every version Triton knows about."""
        states: dict[tuple[str, int], tuple[str, str]] = {}
        for m in self.index(timeout_s):
            if m.get("version"):  # a version reloaded in place may be listed twice: READY wins
                key = (m["name"], int(m["version"]))
                if states.get(key, ("",))[0] != "READY":
                    states[key] = (m.get("state", ""), m.get("reason", ""))
        return states

    def close(self) -> None:
        self.client.close()
