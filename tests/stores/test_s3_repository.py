"""The model repository in S3: registry -> sync -> a real S3 server -> a real tritonserver loading from it.

Everything is real: the MLflow store, ``rclone serve s3``, boto3, and the embedded ``tritonserver``
started with ``--model-repository=s3://host:port/bucket/prefix``. What is checked is the contract of
:mod:`serving.repository.s3_repository`: what is published is the mirror byte for byte, configs only
ever name published files, a stopped S3 server leaves the old state serving and a retry completes,
and nothing outside the prefix is touched. Promote and rollback from S3 under load, with retired
files deleted only once every server moved, run on two servers in ``tests/e2e/test_fleet.py``.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from common.exit_codes import UNAVAILABLE
from common.object_store import Bucket, ObjectStoreError
from common.params import Params, RegistryConfig, ServingConfig
from registry import aliases, store
from registry.sync import sync
from scripts import local_stores
from serving.repository.s3_repository import S3Repository
from serving.server.embedded import ADMIN_HEADER, EmbeddedServer, ServerConfig, free_ports
from tests.conftest import add_version
from tests.e2e.test_registry_triton import classify_bytes
from tests.serving.conftest import triton_or_skip
from tests.stores.conftest import objects, tree

pytestmark = [pytest.mark.triton, pytest.mark.slow]
PREFIX = "team/cifar10"


class S3Stack:
    """Registered versions, a repository published to S3, and a tritonserver loading from S3."""

    def __init__(self, export_dir: Path, uri: str, s3: local_stores.S3, tmp: Path) -> None:
        self.mp = pytest.MonkeyPatch()
        self.mp.setenv("MLFLOW_TRACKING_URI", uri)
        for name, value in s3.env().items():
            self.mp.setenv(name, value)
        self.s3, self.tmp = s3, tmp
        prefix = f"s{uuid.uuid4().hex[:8]}"
        self.cfg = RegistryConfig(model_prefix=prefix, serve=("fp32",), ensemble_target="fp32")
        self.name = self.cfg.registered_name("fp32")
        store.register_manifest(export_dir / "manifest.json", self.cfg)
        aliases.promote(self.name, "production", 1)
        self.bucket = s3.bucket(f"models{uuid.uuid4().hex[:8]}")
        self.uri = f"s3://127.0.0.1:{s3.port}/{self.bucket}/{PREFIX}"
        self.cache = tmp / "cache"
        self.params = Params(profile="test", registry=self.cfg, serving=ServingConfig(warmup=False))
        sync(self.params, self.uri, self.cache)
        http, grpc, metrics = free_ports(3)
        self.header = (ADMIN_HEADER, "t" + uuid.uuid4().hex)
        config = ServerConfig(
            model_repository=self.uri, http_port=http, grpc_port=grpc, metrics_port=metrics,
            log_file=tmp / "triton.log", restricted_header=self.header, exit_timeout_s=3,
        )  # fmt: skip
        self.server = EmbeddedServer(config).start().wait_ready(180)
        self.http = httpclient.InferenceServerClient(self.server.http_endpoint, concurrency=4)

    @property
    def repository(self) -> S3Repository:
        return S3Repository.at(self.uri, self.cache)

    def published(self) -> set[str]:
        return set(objects(self.s3, self.bucket))

    def roll(self):
        return sync(self.params, self.uri, self.cache, self.server.url_grpc, self.header)

    def routed_version(self) -> int:
        config = self.http.get_model_config("cifar10")
        step = next(s for s in config["ensemble_scheduling"]["step"] if s["model_name"] == "wrn_fp32")
        return int(step["model_version"])

    def close(self) -> None:
        self.http.close()
        self.server.stop(grace=20)
        self.mp.undo()


@pytest.fixture(scope="module")
def stack(small_export, s3_server, tmp_path_factory):
    triton_or_skip()
    stack = S3Stack(*small_export, s3_server, tmp_path_factory.mktemp("s3stack"))
    yield stack
    stack.close()


def _image(small_prepared: Path) -> bytes:
    return sorted((small_prepared / "test_images").rglob("*.*"))[0].read_bytes()


def test_what_is_published_is_the_mirror_byte_for_byte_and_triton_serves_it(stack, small_prepared):
    published = {k.removeprefix(PREFIX + "/"): v for k, v in objects(stack.s3, stack.bucket).items()}
    local = tree(stack.repository.local)
    markers = {k for k in published if k.endswith("/.folder")}
    assert {k: v for k, v in published.items() if k not in markers} == local
    assert markers == {"cifar10/1/.folder"}  # the ensemble's empty version folder exists in S3 too
    assert stack.repository.deployed_spec() is not None
    index, label = classify_bytes(stack.http, _image(small_prepared))
    assert 0 <= index < 10 and label
    assert stack.routed_version() == 1


def test_loads_racing_publishes_never_fail_and_never_serve_a_config_without_its_files(stack):
    """An outside server loading at any moment (as a poller does) sees old or new, never a mix.

    A config naming a version whose files are not all there fails the load; a load between two
    publishes must leave exactly the versions of one published config READY. (Triton's reported
    config is no witness: after a version is only removed it keeps listing it while it unloads.)
    """
    v3 = add_version(stack.name)
    stop, problems, loads = threading.Event(), [], [0]
    admin = grpcclient.InferenceServerClient(stack.server.url_grpc.removeprefix("grpc://"))
    metadata = {f"triton-grpc-protocol-{stack.header[0]}": stack.header[1]}

    def loader() -> None:
        while not stop.is_set():
            try:
                admin.load_model("wrn_fp32", headers=metadata)
                ready = {int(m["version"]) for m in admin.get_model_repository_index(
                    headers=metadata, as_json=True)["models"]
                    if m["name"] == "wrn_fp32" and m.get("state") == "READY"}  # fmt: skip
                if ready not in ({1}, {v3}):
                    problems.append(f"READY {ready} after a load: no published config names that")
                loads[0] += 1
            except Exception as exc:
                problems.append(repr(exc))

    thread = threading.Thread(target=loader)
    thread.start()
    try:
        for _ in range(3):  # publish only (no --server): the loader is the only one loading
            aliases.promote(stack.name, "production", v3)
            sync(stack.params, stack.uri, stack.cache)
            aliases.rollback(stack.name)
            sync(stack.params, stack.uri, stack.cache)
    finally:
        stop.set()
        thread.join()
        admin.close()
    assert not problems, problems[:3]
    assert loads[0] >= 3
    retired = {k for k in stack.published() if k.startswith(f"{PREFIX}/wrn_fp32/{v3}/")}
    assert retired  # a plain sync cannot know the pollers moved: it leaves the retired files
    sync(stack.params, stack.uri, stack.cache, prune=True)
    assert not {k for k in stack.published() if k.startswith(f"{PREFIX}/wrn_fp32/{v3}/")}
    stack.roll()  # the server itself back on what the registry says


def test_a_crafted_file_tag_naming_a_key_outside_the_prefix_is_refused_and_touches_nothing(stack):
    from registry.tags import TagError

    before = objects(stack.s3, stack.bucket)
    bad = add_version(stack.name, file="../../../escape.onnx")
    aliases.promote(stack.name, "production", bad)
    try:
        with pytest.raises(TagError):
            sync(stack.params, stack.uri, stack.cache)
        with pytest.raises(TagError):
            stack.roll()
    finally:
        aliases.rollback(stack.name)
    assert objects(stack.s3, stack.bucket) == before


def test_wrong_credentials_fail_in_one_line_without_the_secret(stack, tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    secret = "wrong-" + uuid.uuid4().hex
    env = os.environ | {"AWS_SECRET_ACCESS_KEY": secret}
    params = tmp_path / "params.yaml"
    registry = {"model_prefix": stack.cfg.model_prefix, "serve": ["fp32"]}
    params.write_text(yaml.safe_dump({"registry": registry}))
    cache = str(tmp_path / "c")
    commands = {
        "sync": ["registry", "--params", str(params), "sync", "--repository", stack.uri, "--cache", cache],
        "serve": ["serve", "--model-repository", stack.uri, "--startup-timeout", "20"],
    }
    for what, argv in commands.items():
        run = subprocess.run(
            [sys.executable, "-m", "commands", *argv], env=env, capture_output=True, text=True, timeout=120
        )
        lines = run.stderr.strip().splitlines()
        assert run.returncode == UNAVAILABLE, (what, run.stderr[-2000:])
        assert len(lines) == 1 and "refused the credentials" in lines[0], (what, lines)
        assert secret not in run.stdout + run.stderr


@pytest.mark.parametrize(
    ("form", "code", "says"),
    [
        ("s3://{bucket}/team/cifar10", 2, "host:port"),
        ("s3://https://127.0.0.1:{port}/{bucket}/team/cifar10", UNAVAILABLE, "speaks no TLS"),
        ("s3://127.0.0.1:{port}/{bucket}/../up", 2, "plain folder names"),
    ],
)
def test_uri_forms_triton_would_hang_on_are_refused_before_it_starts(stack, form, code, says):
    from serving.server.foreground import repository_problem

    problem = repository_problem(form.format(bucket=stack.bucket, port=stack.s3.port))
    assert problem is not None and problem[0] == code and says in problem[1], problem


def test_an_s3_server_stopped_mid_publish_leaves_the_old_state_serving_and_a_retry_completes(
    stack, small_prepared, monkeypatch
):
    before_spec = stack.repository.deployed_spec()
    config_key = f"{PREFIX}/wrn_fp32/config.pbtxt"
    old_config = objects(stack.s3, stack.bucket)[config_key]
    v4 = add_version(stack.name)
    aliases.promote(stack.name, "production", v4)
    put, calls = Bucket.put, [0]

    def put_then_stop(self, key, source, sha256):  # the server really stops, right after one object
        put(self, key, source, sha256)
        calls[0] += 1
        if calls[0] == 1:
            stack.s3.stop()

    monkeypatch.setattr(Bucket, "put", put_then_stop)
    try:
        with pytest.raises(ObjectStoreError) as failed:
            stack.roll()
        assert failed.value.exit_code == UNAVAILABLE and "unreachable" in str(failed.value)
    finally:
        monkeypatch.setattr(Bucket, "put", put)
        stack.s3.start()  # same port, same folder
    assert objects(stack.s3, stack.bucket)[config_key] == old_config  # no config names a missing file
    assert stack.repository.deployed_spec() == before_spec
    assert stack.routed_version() == 1
    classify_bytes(stack.http, _image(small_prepared))  # still serving
    stack.roll()  # the retry completes
    assert stack.routed_version() == v4  # (the module's last test: production stays at v4)
