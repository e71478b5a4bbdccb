"""Registry -> sync -> a real tritonserver: what the ``production`` alias names is what serves.

These tests run the product's own path end to end: register an export, promote, ``sync`` the model
repository from the registry, start the embedded Triton, and talk to it over HTTP and gRPC.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from client.core.transport import image_batch, parse_classification
from common.params import DataConfig, Params, RegistryConfig, ServingConfig
from export import onnx_io
from registry import aliases, store
from registry.sync import sync
from serving.server.embedded import ADMIN_HEADER, EmbeddedServer, ServerConfig
from tests.conftest import add_version, assert_served_like_pytorch, fp32_tolerance, served_reference_files
from tests.serving.conftest import free_ports, triton_or_skip
from training.augment import normalize_batch

pytestmark = pytest.mark.triton
SERVING = ServingConfig(preferred_batch_sizes=(8, 32), max_queue_delay_us=1000)


class Stack:
    """An MLflow store with registered versions, a synced repository and a running server."""

    def __init__(self, export_dir: Path, uri: str, tmp: Path, serve=("fp32", "int8")) -> None:
        self.mp = pytest.MonkeyPatch()
        self.mp.setenv("MLFLOW_TRACKING_URI", uri)
        self.cfg = RegistryConfig(
            model_prefix=f"e{uuid.uuid4().hex[:8]}", serve=serve, ensemble_target="fp32"
        )
        self.name = self.cfg.registered_name("fp32")
        store.register_manifest(export_dir / "manifest.json", self.cfg)
        for form in serve:  # sync serves what production names, and nothing without it
            aliases.promote(self.cfg.registered_name(form), "production", 1)
        self.repo, self.cache = tmp / "model_repository", tmp / "cache"
        self.params = Params(profile="test", registry=self.cfg, serving=SERVING)
        sync(self.params, self.repo, self.cache)
        http, grpc, metrics = free_ports(3)
        self.header = (ADMIN_HEADER, secrets.token_hex(8))
        self.server = (
            EmbeddedServer(
                ServerConfig(
                    model_repository=self.repo,
                    http_port=http,
                    grpc_port=grpc,
                    metrics_port=metrics,
                    log_file=tmp / "triton.log",
                    restricted_header=self.header,
                    exit_timeout_s=3,
                )
            )
            .start()
            .wait_ready(180)
        )
        self.http = httpclient.InferenceServerClient(self.server.http_endpoint, concurrency=8)
        self.grpc = grpcclient.InferenceServerClient(self.server.url_grpc.removeprefix("grpc://"))

    def roll(self):
        return sync(self.params, self.repo, self.cache, self.server.url_grpc, self.header)

    def routed_version(self) -> int:
        config = self.http.get_model_config("cifar10")
        step = next(s for s in config["ensemble_scheduling"]["step"] if s["model_name"] == "wrn_fp32")
        return int(step["model_version"])

    def close(self) -> None:
        self.http.close()
        self.grpc.close()
        self.server.stop(grace=20)
        self.mp.undo()


def classify_bytes(client, blob: bytes, module=httpclient) -> tuple[int, str]:
    """(class index, label) of one image through the ensemble, via the classification extension."""
    inp = module.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(image_batch([blob]))
    out = module.InferRequestedOutput("PROBABILITIES", class_count=1)
    labels, _, index = parse_classification(
        client.infer("cifar10", [inp], outputs=[out]).as_numpy("PROBABILITIES")[0]
    )
    return index, labels[0]


@pytest.fixture(scope="module")
def small_stack(small_export, tmp_path_factory):
    triton_or_skip()
    stack = Stack(*small_export, tmp_path_factory.mktemp("stack"))
    yield stack
    stack.close()


def test_tensor_inference_over_http_and_grpc_matches_onnxruntime(small_stack, small_export, small_prepared):
    """Serving changes nothing: each served form answers what its own file does in ONNX Runtime here.

    The bound is the fp32 tolerance the export promises (params.yaml), for int8 too: int8 kernels
    differ between CPUs (VNNI or not), so int8 is compared with int8 run in-process on this same
    CPU, never with fp32 on a handful of images (that once gave 14/16 on one machine, 16/16 here).
    """
    tol = fp32_tolerance()
    x = normalize_batch(np.load(small_prepared / "val_x.npy")[:16], DataConfig()).numpy()
    h = httpclient.InferInput("input", list(x.shape), "FP32")
    h.set_data_from_numpy(x)
    g = grpcclient.InferInput("input", list(x.shape), "FP32")
    g.set_data_from_numpy(x)
    for form in ("fp32", "int8"):
        expected = onnx_io.run_onnx(small_export[0] / f"model.{form}.onnx", x)
        got_http = small_stack.http.infer(f"wrn_{form}", [h], model_version="1").as_numpy("logits")
        got_grpc = small_stack.grpc.infer(f"wrn_{form}", [g]).as_numpy("logits")
        assert np.abs(got_http - expected).max() <= tol and np.abs(got_grpc - expected).max() <= tol, form


def test_image_bytes_through_the_ensemble(small_stack, small_prepared):
    files = sorted((small_prepared / "test_images").rglob("*.*"))[:6]
    x = normalize_batch(np.load(small_prepared / "test_x.npy"), DataConfig()).numpy()
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    direct = small_stack.http.infer("wrn_fp32", [inp]).as_numpy("logits").argmax(1)
    order = sorted((small_prepared / "test_images").rglob("*.*"))
    for f in files:
        idx_http, label = classify_bytes(small_stack.http, f.read_bytes())
        idx_grpc, _ = classify_bytes(small_stack.grpc, f.read_bytes(), grpcclient)
        assert idx_http == idx_grpc == direct[order.index(f)]
        assert label == DataConfig().classes[idx_http]


def test_server_serves_exactly_the_aliased_versions(small_stack):
    index = {
        (m["name"], m.get("version")): m.get("state")
        for m in small_stack.http.get_model_repository_index(headers=small_stack.server.admin_headers)
    }
    assert index[("wrn_fp32", "1")] == "READY" and small_stack.routed_version() == 1


@pytest.mark.full  # 20-minute budget: tests/serving/test_control.py and the fleet's cover it
def test_promote_and_rollback_while_a_client_sends_requests(small_stack, small_prepared):
    """Zero failed requests across promote -> sync and rollback -> sync; routing follows the alias."""
    add_version(small_stack.name)
    blob = sorted((small_prepared / "test_images").rglob("*.*"))[0].read_bytes()
    stop, failures, done = threading.Event(), [], [0]

    def hammer() -> None:
        local = httpclient.InferenceServerClient(small_stack.server.http_endpoint)
        while not stop.is_set():
            try:
                classify_bytes(local, blob)
                done[0] += 1
            except Exception as exc:  # any failure is what this test exists to catch
                failures.append(repr(exc))
        local.close()

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        start = time.perf_counter()
        aliases.promote(small_stack.name, "production", 2)
        phases = small_stack.roll().phases
        promote_s = time.perf_counter() - start
        assert small_stack.routed_version() == 2 and "switch" in phases
        aliases.rollback(small_stack.name)
        small_stack.roll()
        assert small_stack.routed_version() == 1
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(f"promote -> version 2 serving: {promote_s:.2f} s; {done[0]} requests during the rollouts")
    assert not failures, failures[:3]
    assert done[0] > 10


def test_corrupt_new_version_fails_to_load_and_the_old_one_keeps_serving(
    small_stack, small_prepared, tmp_path
):
    import mlflow

    from common.fsutil import sha256_file

    broken = tmp_path / "model.fp32.onnx"
    broken.write_bytes(b"not an onnx model" * 100)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(broken), "export/fp32")
    client = store.client()
    tags = dict(client.get_model_version(small_stack.name, "1").tags) | {"sha256": sha256_file(broken)}
    tags.pop("quality_sha256")  # registered without a quality reference: the load itself must fail
    mv = client.create_model_version(
        small_stack.name, f"runs:/{run.info.run_id}/export/fp32", run_id=run.info.run_id, tags=tags
    )
    aliases.promote(small_stack.name, "production", int(mv.version))
    blob = sorted((small_prepared / "test_images").rglob("*.*"))[0].read_bytes()
    with pytest.raises(Exception, match=r"(?i)load|unavailable|stage"):
        small_stack.roll()
    assert small_stack.routed_version() == 1
    assert classify_bytes(small_stack.http, blob)[1] in DataConfig().classes
    aliases.rollback(small_stack.name)


def test_a_rollout_without_a_chosen_version_changes_nothing_on_the_live_server(small_stack, monkeypatch):
    """A missing alias or a failing registry stops ``sync --server`` before any write or load.

    The old behaviour fell back to the newest version and loaded it into the live server: a
    version nobody chose would have started serving.
    """
    from tests.client.conftest import free_port
    from tests.registry.test_sync import tree_digest

    client = store.client()
    newest = add_version(small_stack.name)
    before, routed = tree_digest(small_stack.repo), small_stack.routed_version()
    client.delete_registered_model_alias(small_stack.name, "production")
    try:
        with pytest.raises(store.RegistryError, match="has no alias 'production'"):
            small_stack.roll()
        with monkeypatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
            mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
            with pytest.raises(store.RegistryUnavailable):
                small_stack.roll()
    finally:
        client.set_registered_model_alias(small_stack.name, "production", "1")
    assert tree_digest(small_stack.repo) == before
    assert small_stack.routed_version() == routed
    states = {
        (m["name"], m.get("version")): m.get("state")
        for m in small_stack.http.get_model_repository_index(headers=small_stack.server.admin_headers)
    }
    assert ("wrn_fp32", str(newest)) not in states  # never loaded


@pytest.fixture(scope="module")
def reference_stack(reference_export, tmp_path_factory):
    triton_or_skip()
    folder, _, uri = reference_export
    stack = Stack(folder, uri, tmp_path_factory.mktemp("refstack"), serve=("fp32",))
    yield stack
    stack.close()


def _ensemble_predictions(stack: Stack, files: list[Path]) -> dict[Path, int]:
    """Served class index per file, 8 requests in flight (tritonclient's async HTTP; one thread)."""
    predicted = {}
    for i in range(0, len(files), 8):
        pending = []
        for f in files[i : i + 8]:
            blob = image_batch([f.read_bytes()])
            inp = httpclient.InferInput("IMAGE", list(blob.shape), "BYTES")
            inp.set_data_from_numpy(blob)
            pending.append((f, stack.http.async_infer("cifar10", [inp])))
        for f, request in pending:
            predicted[f] = int(request.get_result().as_numpy("PROBABILITIES")[0].argmax())
    return predicted


def _check(stack: Stack, files: list[Path], prepared: Path, logits: np.ndarray) -> None:
    predicted = _ensemble_predictions(stack, files)
    stats = assert_served_like_pytorch(predicted, prepared, logits)
    acc = np.mean([DataConfig().classes[c] == f.parent.name for f, c in predicted.items()])
    (Path(stack.repo).parent / "accuracy.json").write_text(json.dumps({"accuracy": acc, **stats}))
    print(f"reference WRN-28-10 via Triton ensemble: {acc:.2%} on {len(files)} images; {stats}")


@pytest.mark.data
@pytest.mark.full  # 20-minute budget: tests/client/test_reference.py checks it via the client
def test_reference_model_through_the_ensemble_answers_like_pytorch(
    reference_stack, prepared_mirror, reference_test_logits
):
    files = served_reference_files(prepared_mirror)
    assert len(files) == 500  # all 5,000: test_reference_model_through_the_ensemble_on_all_5000 (full)
    _check(reference_stack, files, prepared_mirror, reference_test_logits)


@pytest.mark.slow
@pytest.mark.full
@pytest.mark.data
def test_reference_model_through_the_ensemble_on_all_5000(
    reference_stack, prepared_mirror, reference_test_logits
):
    files = sorted((prepared_mirror / "test_images").rglob("*.jpg"))
    assert len(files) == 5000
    _check(reference_stack, files, prepared_mirror, reference_test_logits)
