"""Fixtures for the serving tests: tiny real ONNX classifiers, specs, images and a Triton launcher."""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion
from serving.server.embedded import EmbeddedServer, ServerConfig, free_ports
from tests.conftest import export_tiny_wrn
from tests.prerequisites import need

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CLASSIFIER = "wrn_fp32"


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Registry-like artifacts: version 1 and 2 are different random WRN-10-1 classifiers."""
    root = tmp_path_factory.mktemp("onnx")
    return {v: export_tiny_wrn(root / f"wrn_v{v}.onnx", seed=v) for v in (1, 2)}


@pytest.fixture(scope="session")
def corrupt_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corrupt") / "broken.onnx"
    path.write_bytes(b"this is not an ONNX protobuf" + bytes(range(256)) * 8)
    return path


def make_spec(
    artifacts: dict[int, Path], production: int, extra: tuple[ServedModel, ...] = (), **kw: object
) -> RepositorySpec:
    model = ServedModel(
        name=CLASSIFIER,
        backend="onnxruntime",
        versions=tuple(ServedVersion(v, p) for v, p in sorted(artifacts.items())),
        production=production,
        max_batch_size=256,
        preferred_batch_sizes=(4, 8),
        max_queue_delay_us=1000,
    )
    return RepositorySpec(
        classifiers=(model, *extra), ensemble_target=CLASSIFIER, classes=CLASSES, mean=MEAN, std=STD, **kw
    )


def ort_session(path: Path):
    """An in-process ONNX Runtime session configured like the server's backend (CPU, all opts)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def triton_or_skip() -> None:
    need("triton")


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., EmbeddedServer]]:
    """``launch(repo)`` starts a server on free ports (stopped at module end) and waits until ready."""
    triton_or_skip()
    servers: list[EmbeddedServer] = []

    def start(repository: Path, **kw: object) -> EmbeddedServer:
        http, grpc, metrics = free_ports(3)
        config = ServerConfig(
            model_repository=repository,
            http_port=http,
            grpc_port=grpc,
            metrics_port=metrics,
            log_file=tmp_path_factory.mktemp("triton-log") / "tritonserver.log",
            restricted_header=("x-cifar10-admin", secrets.token_hex(8)),
            ort_threads=1,
            exit_timeout_s=3,
            **kw,
        )
        server = EmbeddedServer(config).start()
        servers.append(server)
        return server.wait_ready(120)

    yield start
    for server in servers:
        server.stop(grace=20)


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def random_image(seed: int, height: int = 32, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pack(blobs: list[bytes]) -> np.ndarray:
    """Encoded files as the ensemble's ``IMAGE``: ``BYTES [n, 1]``, one file per batch element."""
    from client.core.transport import image_batch

    return image_batch(blobs)


def reference_preprocess(blob: bytes) -> np.ndarray:
    """What the preprocess model should compute, written independently with PIL and numpy."""
    img = Image.open(io.BytesIO(blob)).convert("RGB")
    if img.size != (32, 32):
        img = img.resize((32, 32), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (
        (x - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    ).astype(np.float32)
