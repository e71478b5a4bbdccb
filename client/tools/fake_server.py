"""A stub inference server that answers instantly, to measure the load generator itself.

It speaks just enough of the KServe v2 protocol - HTTP/JSON (incl. the binary-tensor request
extension tritonclient uses) and gRPC - for ``client bench`` to drive it exactly as it drives
Triton: health and readiness, and ``infer`` returning canned ensemble outputs (the classification
extension's ranked ``PROBABILITIES`` strings) or classifier ``logits``. Whatever rate the generator
reaches against it is an upper bound of what the generator can measure; a real server far below that bound
is not limited by the client.

Run it in its own process (``python -m client.tools.fake_server --http-port P --grpc-port Q``;
:class:`StubServer` does this), so it does not share the generator's interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

LABELS = ["airplane", "automobile", "bird"]


def _outputs(image_request: bool, batch: int) -> list[tuple[str, str, list[int], np.ndarray]]:
    if image_request:  # what the classification extension returns for class_count=3
        ranked = [f"{1 / 3:.6f}:{i}:{label}".encode() for i, label in enumerate(LABELS)]
        return [("PROBABILITIES", "BYTES", [batch, 3], np.array([ranked] * batch, dtype=np.object_))]
    return [("logits", "FP32", [batch, 10], np.zeros((batch, 10), dtype=np.float32))]


def _bytes_tensor(arr: np.ndarray) -> bytes:
    """KServe v2 raw BYTES: each element as a 4-byte little-endian length plus its bytes."""
    return b"".join(struct.pack("<I", len(x)) + x for x in arr.reshape(-1))


def _http_app():
    from aiohttp import web

    cache: dict[tuple[str, bool, int], bytes] = {}

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="")

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        size = request.headers.get("Inference-Header-Content-Length")
        header = json.loads(body[: int(size)] if size else body)
        first = header["inputs"][0]
        key = (request.match_info["name"], first["name"] == "IMAGE", int(first["shape"][0]))
        if key not in cache:
            outputs = [
                {
                    "name": n,
                    "datatype": d,
                    "shape": s,
                    "data": [x.decode() for x in a.reshape(-1)] if d == "BYTES" else a.reshape(-1).tolist(),
                }
                for n, d, s, a in _outputs(key[1], key[2])
            ]
            cache[key] = json.dumps({"model_name": key[0], "model_version": "1", "outputs": outputs}).encode()
        return web.Response(body=cache[key], content_type="application/json")

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/v2/health/live", ok)
    app.router.add_get("/v2/health/ready", ok)
    app.router.add_get("/v2/models/{name}/ready", ok)
    app.router.add_get("/v2/models/{name}/versions/{version}/ready", ok)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_post("/v2/models/{name}/versions/{version}/infer", infer)
    return app


def _grpc_servicer():
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class Stub(service_pb2_grpc.GRPCInferenceServiceServicer):
        def __init__(self) -> None:
            self.cache: dict[tuple[str, bool, int], service_pb2.ModelInferResponse] = {}

        async def ServerLive(self, request, context):
            return service_pb2.ServerLiveResponse(live=True)

        async def ServerReady(self, request, context):
            return service_pb2.ServerReadyResponse(ready=True)

        async def ModelReady(self, request, context):
            return service_pb2.ModelReadyResponse(ready=True)

        async def ModelInfer(self, request, context):
            first = request.inputs[0]
            key = (request.model_name, first.name == "IMAGE", int(first.shape[0]))
            if key not in self.cache:
                response = service_pb2.ModelInferResponse(model_name=key[0], model_version="1")
                for name, dtype, shape, arr in _outputs(key[1], key[2]):
                    response.outputs.add(name=name, datatype=dtype, shape=shape)
                    raw = _bytes_tensor(arr) if dtype == "BYTES" else arr.tobytes()
                    response.raw_output_contents.append(raw)
                self.cache[key] = response
            return self.cache[key]

    return Stub(), service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server


async def serve(host: str, http_port: int, grpc_port: int) -> None:
    """Run both servers until cancelled; prints ``ready`` once both listen."""
    import grpc
    from aiohttp import web

    runner = web.AppRunner(_http_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, http_port).start()
    server = grpc.aio.server()
    servicer, add = _grpc_servicer()
    add(servicer, server)
    server.add_insecure_port(f"{host}:{grpc_port}")
    await server.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop(0)
        await runner.cleanup()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class StubServer:
    """``with StubServer() as stub: stub.http_url`` - the stub in a child process on free ports."""

    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None

    def __enter__(self) -> StubServer:
        self.http_port, self.grpc_port = free_port(self.host), free_port(self.host)
        cmd = [
            sys.executable,
            "-m",
            "client.tools.fake_server",
            "--host",
            self.host,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
        ]
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""  # "" if it died
        if line.strip() != "ready":
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")
            self.__exit__()
            raise RuntimeError(f"stub server failed to start: {err[-500:] or line!r}")
        return self

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self._stderr.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.http_port, args.grpc_port))


if __name__ == "__main__":
    main()
