"""A real embedded Triton serving a tiny WideResNet, and labelled image folders for the client tests.

The classifier is an untrained WRN-10-1 exported to ONNX inside the test session: its predictions are
meaningless, but every byte of the serving path (ensemble, python pre/post-processing, the python-based
onnxruntime backend, metrics) is the real one. The repository serves versions 1 and 2, the ensemble
routes to version 2, which is what the version-check tests of ``offline-eval`` need.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.server.embedded import free_ports
from tests.conftest import CLASSES, make_image_folder
from tests.prerequisites import need

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
PRODUCTION = 2


def free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="session")
def tritonserver() -> Path:
    """The ``tritonserver`` binary; skips where it (or a shared libpython) is missing, fails in CI."""
    from serving.server.embedded import find_tritonserver

    need("triton")
    return find_tritonserver()


def make_spec(onnx: Path, versions: tuple[int, ...] = (1, PRODUCTION), production: int = PRODUCTION):
    from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion

    model = ServedModel(
        name="wrn_fp32",
        backend="onnxruntime",
        versions=tuple(ServedVersion(v, onnx) for v in versions),
        production=production,
        max_batch_size=64,
        preferred_batch_sizes=(8, 32),
        max_queue_delay_us=1000,
    )
    return RepositorySpec(
        classifiers=(model,), ensemble_target="wrn_fp32", classes=CLASSES, mean=MEAN, std=STD
    )


def server_config(repo: Path, log_dir: Path, ort_threads: int | None = 1):
    from serving.server.embedded import ServerConfig

    http, grpc, metrics = free_ports(3)
    return ServerConfig(
        model_repository=repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        log_file=log_dir / "tritonserver.log",
        exit_timeout_s=2,
        ort_threads=ort_threads,
    )


def start_server(tritonserver: Path, onnx: Path | None, tmp: Path, ort_threads: int | None = 1):
    """A started, ready :class:`EmbeddedServer` on ``tmp/repo`` (built from ``onnx`` if given)."""
    from serving.repository.build import build_repository
    from serving.server.embedded import EmbeddedServer

    if onnx is not None:
        build_repository(make_spec(onnx), tmp / "repo")
    server = EmbeddedServer(server_config(tmp / "repo", tmp / "log", ort_threads))
    server.start()
    try:
        server.wait_ready(timeout=120)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def triton(tritonserver: Path, tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One shared server for the tests that do not stop it."""
    server = start_server(tritonserver, tiny_onnx, tmp_path_factory.mktemp("triton"))
    try:
        yield server
    finally:
        server.stop(grace=10)


@pytest.fixture(scope="session")
def labelled_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/<class>/NNNN.{png,jpg}``: 4 synthetic images per class (40 in all)."""
    root = make_image_folder(tmp_path_factory.mktemp("images"), {"test": 4})
    return root / "test"


@pytest.fixture
def messy_images(labelled_images: Path, tmp_path: Path) -> Path:
    """The labelled folder plus files the client must skip (and one it must skip in bytes mode only)."""
    from PIL import Image

    root = tmp_path / "messy"
    shutil.copytree(labelled_images, root)
    (root / "cat" / "notes.jpg").write_text("not an image at all\n")
    (root / "dog" / "empty.png").write_bytes(b"")
    data = (root / "bird" / "0000.jpg").read_bytes()
    (root / "bird" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (32, 32), (10, 200, 30)).save(root / "frog" / "green.gif")
    return root


def cli_args(server, *extra: str) -> list[str]:
    """Connection options for ``cifar10 client`` pointing at ``server``."""
    return [
        "--url", server.http_endpoint,
        "--grpc-url", server.url_grpc,
        "--metrics-url", server.url_metrics,
        "--timeout", "10",
        "--no-progress",
        *extra,
    ]  # fmt: skip
