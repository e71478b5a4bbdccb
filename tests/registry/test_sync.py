"""``sync`` treats the registry as untrusted input and never writes a repository from a guess."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import pytest

from common.params import Params, RegistryConfig, ServingConfig
from registry import aliases, store
from registry.sync import ServingSettingError, sync
from registry.tags import TagError
from tests.conftest import add_version

SERVING = ServingConfig(preferred_batch_sizes=(8, 32))


def tree_digest(root: Path) -> str:
    """Paths and bytes of every file below ``root``: equal digests mean nothing was touched."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def synced(small_export, monkeypatch, tmp_path):
    """A registry with fp32 v1 in production and a repository synced from it."""
    folder, uri = small_export
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = Params(
        profile="test",
        registry=RegistryConfig(
            model_prefix=f"s{uuid.uuid4().hex[:8]}", serve=("fp32",), ensemble_target="fp32"
        ),
        serving=SERVING,
    )
    store.register_manifest(folder / "manifest.json", cfg.registry)
    name = cfg.registry.registered_name("fp32")
    aliases.promote(name, "production", 1)
    repo, cache = tmp_path / "model_repository", tmp_path / "cache"
    assert sync(cfg, repo, cache).changed is True
    return cfg, name, repo, cache


@pytest.mark.parametrize(
    "planted", ["../../victim.txt", "/tmp/victim.txt", "..", "sub/model.onnx", ".hidden", "a\\..\\b"]
)
def test_a_traversal_tag_touches_nothing_outside_the_cache(synced, tmp_path, planted):
    cfg, name, repo, cache = synced
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    before = tree_digest(repo)
    version = add_version(name, file=planted, sha256="0" * 64)  # a wrong hash would unlink the file
    aliases.promote(name, "production", version)
    with pytest.raises(TagError, match=r"tag file=.* is not a plain artifact file name"):
        sync(cfg, repo, cache)
    assert victim.read_text() == "precious"
    assert not (cache / name / str(version)).exists()  # refused before any download
    assert tree_digest(repo) == before


def test_a_symlink_planted_in_the_cache_is_refused_not_followed(synced, tmp_path):
    cfg, name, repo, cache = synced
    victim = tmp_path / "victim.onnx"
    victim.write_text("precious")
    version = add_version(name)
    filename = store.client().get_model_version(name, "1").tags["file"]
    folder = cache / name / str(version)
    folder.mkdir(parents=True)
    (folder / filename).symlink_to(victim)
    aliases.promote(name, "production", version)
    with pytest.raises(store.RegistryError):
        sync(cfg, repo, cache)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    "tags",
    [{"sha256": "../../etc"}, {"format": "python"}, {"sha256": "A" * 64}],
    ids=["sha256-path", "unknown-format", "uppercase-sha"],
)
def test_malformed_version_tags_stop_the_sync(synced, tags):
    cfg, name, repo, cache = synced
    before = tree_digest(repo)
    aliases.promote(name, "production", add_version(name, **tags))
    with pytest.raises(TagError):
        sync(cfg, repo, cache)
    assert tree_digest(repo) == before


def test_malformed_model_tags_stop_the_sync(synced):
    cfg, name, repo, cache = synced
    before = tree_digest(repo)
    store.client().set_registered_model_tag(name, "input", "input; rm -rf /")
    with pytest.raises(TagError, match="not a valid tensor name"):
        sync(cfg, repo, cache)
    store.client().set_registered_model_tag(name, "input", "input")
    store.client().set_registered_model_tag(name, "classes", '["a", 3]')
    with pytest.raises(TagError, match="must list str values"):
        sync(cfg, repo, cache)
    assert tree_digest(repo) == before


def test_a_missing_production_alias_stops_the_sync_and_leaves_the_repository(synced):
    cfg, name, repo, cache = synced
    before = tree_digest(repo)
    add_version(name)  # a newer version exists: the old code would have served it
    store.client().delete_registered_model_alias(name, "production")
    with pytest.raises(store.RegistryError, match="has no alias 'production'"):
        sync(cfg, repo, cache)
    assert tree_digest(repo) == before


def test_an_unreachable_registry_stops_the_sync_and_leaves_the_repository(synced, monkeypatch):
    from tests.client.conftest import free_port

    cfg, _, repo, cache = synced
    before = tree_digest(repo)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(store.RegistryUnavailable):
        sync(cfg, repo, cache)
    assert tree_digest(repo) == before


def test_a_corrupt_cached_artifact_is_replaced_inside_the_cache(synced):
    cfg, name, repo, cache = synced
    cached = cache / name / "1" / store.client().get_model_version(name, "1").tags["file"]
    cached.write_bytes(b"bit rot")
    shutil.rmtree(repo)
    sync(cfg, repo, cache)
    assert cached.read_bytes() != b"bit rot" and os.path.getsize(cached) > 1000


def test_the_served_batch_limit_comes_from_the_version_and_a_larger_setting_is_refused(synced):
    """One fact, one key: export.max_batch, recorded on the version, is what config.pbtxt promises."""

    from serving.repository.build import read_deployed_spec

    cfg, name, repo, cache = synced
    recorded = int(store.client().get_model_version(name, "1").tags["max_batch"])
    assert read_deployed_spec(repo).target.max_batch_size == recorded
    too_big = cfg.serving.replace(preferred_batch_sizes=(8, recorded + 1))
    before = tree_digest(repo)
    with pytest.raises(ServingSettingError) as refused:
        sync(cfg.replace(serving=too_big), repo, cache)
    assert f"[8, {recorded + 1}]" in str(refused.value) and f"max_batch {recorded}" in str(refused.value)
    assert tree_digest(repo) == before


def test_sync_serves_the_step_the_release_record_names_and_ignores_a_stale_one(synced):
    """The record is the truth during a release; once production moved under it, it serves nothing."""
    from registry import release_record
    from registry.release_record import ReleaseRecord
    from registry.sync import desired_spec

    cfg, name, _, cache = synced
    candidate = add_version(name)
    gate = ReleaseRecord(name, candidate, name, 1, "gate", started_at=1.0).moved("gate")
    release_record.write(gate)
    desired = desired_spec(cfg, cache)
    spec, summary = desired.spec, desired.summary
    assert spec.target.version_numbers == (1, candidate) and spec.target.production == 1
    assert spec.release is None and summary.release.step == "gate"  # loaded, not routed

    release_record.write(gate.moved("canary", step_index=1, canary_weight=0.5))
    spec = desired_spec(cfg, cache).spec
    assert (spec.release.candidate_version, spec.release.canary_weight) == (candidate, 0.5)
    assert desired_spec(cfg, cache, honour_choice=False).spec.release is None

    aliases.promote(name, "production", candidate)  # by hand, under the release: the record is stale
    desired = desired_spec(cfg, cache)
    spec, summary = desired.spec, desired.summary
    assert spec.release is None and summary.release is None and spec.target.production == candidate


def test_each_version_ships_its_own_quality_reference_and_a_tampered_one_is_refused(synced, small_export):
    """The reference registered with the version is what the python models count against; a copy
    in the artifact store that no longer matches its quality_sha256 tag stops the sync."""
    from urllib.parse import urlparse

    cfg, name, repo, cache = synced
    folder, _ = small_export
    exported = (folder / "quality" / "fp32" / "quality_reference.json").read_bytes()
    model = cfg.registry.triton_name("fp32")
    for python_model in ("preprocess", "postprocess"):
        assert (repo / python_model / "quality" / model / "1.json").read_bytes() == exported
    version = aliases.resolve(name, version=1)
    assert version.tags["quality_sha256"] == hashlib.sha256(exported).hexdigest()
    logged = store.client().get_logged_model(version.source.removeprefix("models:/"))
    stored = Path(urlparse(logged.artifact_location).path) / "quality_reference.json"
    assert stored.read_bytes() == exported
    before = tree_digest(repo)
    try:
        stored.write_bytes(exported.replace(b'"split"', b' "split"'))  # same JSON, other bytes
        shutil.rmtree(cache)
        with pytest.raises(store.RegistryError, match=r"quality_reference\.json does not match"):
            sync(cfg, repo, cache)
        assert tree_digest(repo) == before
    finally:
        stored.write_bytes(exported)
