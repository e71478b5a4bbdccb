"""Shared fixtures: where the offline mirror and reference weights are, and small synthetic data."""

from __future__ import annotations

import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.prerequisites import MIRROR, REFERENCE, ROOT, check_declared, need

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def make_image_folder(root: Path, per_class: dict[str, int], classes=CLASSES, size=(32, 32), seed=0) -> Path:
    """``root/{train,test}/<class>/NNNN.png``: each class a noisy tint, so tiny models can learn it."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(c * 25) % 256, (c * 70) % 256, (255 - c * 25) % 256], dtype=np.float32)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, (*size[::-1], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i:04d}.{'png' if i % 2 else 'jpg'}")
    return root


def export_tiny_wrn(path: Path, seed: int) -> Path:
    """A WRN-10-1 with non-trivial BatchNorm statistics, exported with a dynamic batch dimension."""
    import torch

    from training.model import WideResNet

    torch.manual_seed(seed)
    model = WideResNet(10, 1)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, 3, 32, 32))
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.zeros(2, 3, 32, 32),),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One WRN-10-1 classifier as ONNX: predictions arbitrary but deterministic; the serving path real."""
    return export_tiny_wrn(tmp_path_factory.mktemp("tiny-onnx") / "wrn.onnx", seed=3)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "src", {"train": 12, "test": 3})


@pytest.fixture
def isolated_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private sqlite MLflow store, so tests never touch the user's runs."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def pytest_sessionstart(session: pytest.Session) -> None:
    check_declared()  # CI: a missing declared requirement stops the run with one line naming it


@pytest.fixture(scope="session")
def mirror() -> Path:
    need("mirror")
    return MIRROR


@pytest.fixture(scope="session")
def reference_weights() -> Path:
    need("reference")
    return REFERENCE


@pytest.fixture(scope="session")
def prepared_mirror(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mirror run through the project's own ``prepare`` stage, once per test session."""
    from common.params import DataConfig
    from training.prepare import prepare

    out = tmp_path_factory.mktemp("mirror") / "prepared"
    prepare(DataConfig(source=str(mirror)), out)
    return out


def tar_folder(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname="cifar-like")
    return dest


@pytest.fixture(scope="session")
def small_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data through the real prepare stage: 300 train (40 val), 20 test images."""
    from common.params import DataConfig
    from training.prepare import prepare

    tmp = tmp_path_factory.mktemp("small")
    src = make_image_folder(tmp / "src", {"train": 30, "test": 2})
    prepare(DataConfig(source=str(src), val_per_class=4), tmp / "prepared")
    return tmp / "prepared"


@pytest.fixture(scope="session")
def small_weights(small_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WRN-10-1 trained briefly on the synthetic data, saved as the pipeline saves weights.

    Trained, not random: an untrained net's logits are near-ties, and the top-1 of a near-tie
    flips under any rounding, which would make parity checks on it meaningless.
    """
    import torch
    import torch.nn.functional as F

    from common.params import DataConfig
    from training.augment import normalize_batch
    from training.checkpoint import model_metadata, save_weights
    from training.model import WideResNet

    torch.manual_seed(0)
    model = WideResNet(10, 1).train()
    x = normalize_batch(np.load(small_prepared / "train_x.npy"), DataConfig())
    y = torch.from_numpy(np.load(small_prepared / "train_y.npy"))
    perm = torch.randperm(len(y))
    x, y = x[perm], y[perm]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for i in range(0, len(y), 32):
            loss = F.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("w") / "small.safetensors"
    save_weights(
        model.eval(), path, model_metadata(10, 1, CLASSES, (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
    )
    return path


@pytest.fixture(scope="session")
def small_export(small_prepared: Path, small_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """fp32 + int8 exports of the small model, logged into a session-private MLflow store.

    Returns (export folder, tracking URI); tests that register from it point MLflow at that URI.
    """
    from common.params import DataConfig, ExportConfig
    from export.stage import export_model

    tmp = tmp_path_factory.mktemp("small_export")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    old, cwd = os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.chdir(tmp)
    try:
        cfg = ExportConfig(precisions=("fp32", "int8"), parity_images=40, calibration_images=64, max_batch=64)
        export_model(
            small_weights, small_prepared, DataConfig(val_per_class=4), cfg, tmp / "export", command="test"
        )
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return tmp / "export", uri


# The default run checks the reference model on part of the mirror's test split; `make test-full`
# (any run that selects the `full` tests) on all 5,000 images. On 2 cores PyTorch scores WRN-28-10 at
# ~12 images/s and ONNX Runtime fp32 at ~18, so all 5,000 through both would cost ~13 minutes.
SERVED_PER_CLASS = 50  # the served-reference tests send 50 test images of each class: the rows the
# export scores (served_reference_files), so PyTorch scores those rows only once
EXPORT_SCORED = 500  # the reference export scores this class-balanced part of the test split
EXPORT_PARITY = 100  # ... and gates each form on this many validation images (1,000 with `full`): the
# reference weights trained on the validation images, so there the gate is a parity check, not an
# accuracy one; the test-split accuracy checks (EXPORT_SCORED) are what prove the export keeps accuracy


@pytest.fixture(scope="session")
def reference_on_all(request: pytest.FixtureRequest) -> bool:
    """Whether this run includes the ``full`` tests, and so checks the reference on all 5,000 images."""
    return any(item.get_closest_marker("full") for item in request.session.items)


@pytest.fixture(scope="session")
def reference_rows(prepared_mirror: Path, reference_on_all: bool) -> np.ndarray:
    """Test-split rows the PyTorch reference logits cover: what the served and export checks look at."""
    from export.stage import accuracy_rows

    y = np.load(prepared_mirror / "test_y.npy")
    if reference_on_all:
        return np.arange(len(y))
    return accuracy_rows(y, EXPORT_SCORED)  # served_reference_files picks among these


def served_reference_files(prepared: Path) -> list[Path]:
    """``SERVED_PER_CLASS`` test images of each class, the first ones among the export's scored rows.

    The served-reference checks compare Triton's answers with PyTorch's logits on the same images;
    choosing them among the rows the export scores spares a second PyTorch pass over other rows.
    """
    from common.params import DataConfig
    from export.stage import accuracy_rows

    y = np.load(prepared / "test_y.npy")
    scored = set(accuracy_rows(y, EXPORT_SCORED).tolist())
    root, files = prepared / "test_images", []
    for label, name in enumerate(DataConfig().classes):
        rows = np.flatnonzero(y == label)  # test_images/<class>/NNNN: the NNNN-th row of that class
        picked = [i for i, row in enumerate(rows) if row in scored][:SERVED_PER_CLASS]
        by_index = {int(f.stem): f for f in (root / name).iterdir()}
        files += [by_index[i] for i in picked]
    assert len(files) == SERVED_PER_CLASS * len(DataConfig().classes), "the mirror lacks scored images"
    return files


def linked_image_folder(files: list[Path], dest: Path) -> Path:
    """``dest/<class>/<file>`` links to ``files``: an image folder the client reads like the mirror's."""
    for f in files:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / f.parent.name / f.name).symlink_to(f)
    return dest


@pytest.fixture(scope="session")
def reference_test_logits(
    prepared_mirror: Path, reference_weights: Path, reference_rows: np.ndarray
) -> np.ndarray:
    """PyTorch logits of the reference weights on the mirror's test split (no TTA), once per session.

    Shape ``[5000, classes]``; rows outside ``reference_rows`` are NaN, so a check that strays
    outside what was computed fails instead of comparing against nothing.
    """
    import torch

    from common.params import DataConfig
    from training.checkpoint import load_model
    from training.engine import predict_logits

    x = np.load(prepared_mirror / "test_x.npy", mmap_mode="r")
    out = np.full((len(x), len(DataConfig().classes)), np.nan, dtype=np.float32)
    model = load_model(reference_weights)
    out[reference_rows] = predict_logits(
        model, np.asarray(x[reference_rows]), DataConfig(), torch.device("cpu"), batch_size=250
    )
    return out


@pytest.fixture(scope="session")
def reference_export(
    prepared_mirror: Path,
    reference_weights: Path,
    reference_on_all: bool,
    tmp_path_factory: pytest.TempPathFactory,
):
    """The reference weights through the real export stage (fp32 + int8), in a private MLflow store.

    Returns (export folder, manifest, tracking URI). Exporting WRN-28-10 costs minutes on 2 cores,
    so every test that needs the served reference model shares this one export. Each artifact is
    scored on ``EXPORT_SCORED`` test images by default, on all of them when the run includes ``full``,
    and gated on ``EXPORT_PARITY`` validation images (1,000 with ``full``; each image costs PyTorch,
    ONNX fp32 and int8 a forward pass of WRN-28-10, about 0.17 s together on 2 cores).
    """
    from common.params import DataConfig, ExportConfig, MonitoringConfig
    from export.stage import export_model

    tmp = tmp_path_factory.mktemp("refexp")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(tmp)
        cfg = ExportConfig(
            precisions=("fp32", "int8"),
            parity_images=1000 if reference_on_all else EXPORT_PARITY,
            calibration_images=512,
            accuracy_images=0 if reference_on_all else EXPORT_SCORED,
        )
        # The reference weights trained on the validation images too: their quality reference is
        # calibrated on the scored test rows (the same rows, so the export reuses their logits).
        held_out = MonitoringConfig(reference_split="test", reference_images=cfg.accuracy_images)
        manifest = export_model(
            reference_weights, prepared_mirror, DataConfig(), cfg, tmp / "export", monitoring=held_out
        )
        manifest = manifest.model_dump(mode="json")  # the fixture hands tests the manifest.json shape
    return tmp / "export", manifest, uri


def fp32_tolerance() -> float:
    """The largest |Δlogit| the export promises between ONNX fp32 and PyTorch (params.yaml)."""
    from common.params import load_params

    return load_params(ROOT / "params.yaml").export.tolerances["fp32"].max_abs_logit


def near_ties(logits: np.ndarray, margin: float) -> np.ndarray:
    """Rows whose two best logits lie within ``margin``: the only ones a shift of margin/2 can flip."""
    top2 = np.sort(logits, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= margin


def mirror_row(prepared: Path, path: Path) -> int:
    """Row of ``test_x.npy`` that ``test_images/<class>/NNNN.ext`` was written from (see prepare)."""
    from common.params import DataConfig

    labels = np.load(prepared / "test_y.npy")
    label = DataConfig().classes.index(path.parent.name)
    return int(np.flatnonzero(labels == label)[int(path.stem)])


def assert_served_like_pytorch(
    predicted: dict[Path, int], prepared: Path, reference_logits: np.ndarray
) -> dict[str, int]:
    """Served top-1 equals PyTorch's on every image, except near-ties the fp32 tolerance allows.

    What the product promises about a served fp32 model is |Δlogit| <= tol against PyTorch (the
    export's parity gate). So a served class may differ only where PyTorch's two best logits lie
    within 2 tol; anything else is a serving bug (decode, normalisation, layout, label order). The
    bound holds on any CPU, unlike an accuracy threshold picked from one machine's run.
    """
    tol = fp32_tolerance()
    rows = np.array([mirror_row(prepared, p) for p in predicted])
    assert not np.isnan(reference_logits[rows]).any(), "served images outside the rows PyTorch scored"
    served = np.array(list(predicted.values()))
    expected = reference_logits[rows].argmax(1)
    differ = served != expected
    allowed = near_ties(reference_logits[rows], 2 * tol)
    bad = [str(p) for p, d, a in zip(predicted, differ, allowed, strict=True) if d and not a]
    assert not bad, f"{len(bad)} served predictions differ from PyTorch beyond the fp32 tolerance: {bad[:5]}"
    return {"images": len(rows), "flipped_near_ties": int(differ.sum()), "near_ties": int(allowed.sum())}


def huge_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` (a decompression bomb's calling card).

    Valid signature and CRCs, one small compressed row of data: anything that checks the size from
    the header refuses it in microseconds; anything that decodes first allocates width x height x 3.
    """
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + 3 * min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def add_version(name: str, **tags: str) -> int:
    """Another version of ``name``, as a later pipeline run registers it: v1's files, some tags replaced."""
    from registry import store

    client = store.client()
    v1 = client.get_model_version(name, "1")
    return int(
        client.create_model_version(name, v1.source, run_id=v1.run_id, tags=dict(v1.tags) | tags).version
    )


# Real store servers (scripts.local_stores), each started once per session and stopped after, so
# nothing is left running; a test takes its own database or bucket and never sees another's.
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    from scripts import local_stores

    need("s3")
    with local_stores.s3(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):
    from scripts import local_stores

    need("postgres")
    with local_stores.postgres(tmp_path_factory.mktemp("pg")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch: pytest.MonkeyPatch):
    """The S3 server's credentials in this test's environment (boto3, MLflow and Triton read them)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def bucket(s3_env) -> str:
    import uuid

    return s3_env.bucket(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def database(postgres_server) -> str:
    import uuid

    return postgres_server.create_database(f"t{uuid.uuid4().hex[:12]}")


class TeamMlflow:
    """``cifar10 stores mlflow-server`` on a PostgreSQL database, proxying artifacts to an S3 bucket.

    ``server_env`` holds the secrets (the database password, the S3 keys); clients get only ``uri``.
    """

    def __init__(self, pg, s3, workdir: Path) -> None:
        import os
        import subprocess
        import sys

        self.pg, self.s3 = pg, s3
        import uuid

        self.database = pg.create_database(f"mlflow{uuid.uuid4().hex[:8]}")
        self.bucket = s3.bucket(f"mlflow{uuid.uuid4().hex[:8]}")
        from scripts import local_stores

        self.port = local_stores.free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server_env = (
            os.environ
            | pg.env()
            | s3.env()
            | {
                "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{self.bucket}/mlflow",
            }
        )
        self.server_env.pop("MLFLOW_TRACKING_URI", None)
        self.log = workdir / "mlflow-server.log"
        argv = [sys.executable, "-m", "commands", "stores", "mlflow-server", "--backend-store-uri",
                self.database, "--port", str(self.port), "--workers", "1"]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                argv, env=self.server_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 120) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server not ready: {self.log.read_text()[-3000:]}")

    def client_env(self) -> dict[str, str]:
        """A client's environment: the server's URL, and no database password or S3 key at all."""
        import os

        drop = ("MLFLOW_", "AWS_", "PG", "OPTUNA_")  # and a registry URI an earlier test left behind
        return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | {
            "MLFLOW_TRACKING_URI": self.uri
        }

    def secrets(self) -> list[str]:
        return [self.pg.password, self.s3.secret]

    def stop(self) -> None:
        """The server and its workers (one process group), nothing left running."""
        import contextlib
        import os
        import signal
        import subprocess

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture(scope="module")
def team_mlflow(postgres_server, s3_server, tmp_path_factory):
    team = TeamMlflow(postgres_server, s3_server, tmp_path_factory.mktemp("team"))
    yield team
    team.stop()
