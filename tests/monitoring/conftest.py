"""Fixtures for the monitoring tests: Prometheus binaries, a tiny classifier, fake HTTP endpoints.

The Triton launcher and helpers come from ``tests.serving.conftest`` (imported, so the fixture is
registered here too).
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.prerequisites import need
from tests.serving.conftest import CLASSES, launch  # noqa: F401 - fixture re-export

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"


@pytest.fixture(scope="session")
def promtool() -> str:
    need("prometheus")
    return shutil.which("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    need("prometheus")
    return shutil.which("prometheus")


@pytest.fixture
def reference_file(tmp_path: Path) -> Path:
    """A meta.json like the prepare stage writes: uniform validation class shares."""
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"classes": list(CLASSES), "val_class_distribution": [0.1] * 10}))
    return path


Responder = Callable[[str], tuple[int, str, str]]  # path+query -> (status, content type, body)


@pytest.fixture
def http_stub() -> Iterator[Callable[[Responder], str]]:
    """``http_stub(respond)`` serves ``respond(path)`` on a free loopback port; returns the base URL."""
    servers: list[ThreadingHTTPServer] = []

    def serve(respond: Responder) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, ctype, body = respond(self.path)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def metrics_text(counts: dict[str, float], model: str = "wrn_fp32", version: str = "1") -> str:
    """A Triton-like /metrics page with ``predicted_class_total`` for every class."""
    lines = [
        "# HELP predicted_class_total Predictions served by the ensemble",
        "# TYPE predicted_class_total counter",
    ]
    for name in CLASSES:
        labels = f'class="{name}",model="{model}",version="{version}"'
        lines.append(f"predicted_class_total{{{labels}}} {counts.get(name, 0)}")
    lines.append('nv_inference_count{model="cifar10",version="1"} 7')
    return "\n".join(lines) + "\n"
