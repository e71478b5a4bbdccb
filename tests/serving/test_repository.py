"""The model repository on disk: configs, idempotence, atomicity, and the rollout plan (no server)."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from serving.repository import atomic_fs as atomic
from serving.repository import build as repo_mod
from serving.repository.build import (
    RepositoryError,
    build_repository,
    model_generations,
    read_deployed_spec,
    repository_layout,
    repository_lock,
)
from serving.repository.model_configs import parse
from serving.repository.spec import ServedModel, ServedVersion, SpecError, spec_from_dict, spec_to_dict
from serving.rollout.plan import rollout_plan
from tests.serving.conftest import CLASSES, CLASSIFIER, make_spec


@pytest.fixture
def artifacts(tmp_path: Path) -> dict[int, Path]:
    """Stand-in artifacts: the repository only copies bytes, it never parses them."""
    out = {}
    for v in (1, 2, 3):
        out[v] = tmp_path / "registry" / f"v{v}.onnx"
        out[v].parent.mkdir(exist_ok=True)
        out[v].write_bytes(f"model version {v}".encode() * 100)
    return out


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def config(root: Path, name: str) -> mc.ModelConfig:
    return parse((root / name / "config.pbtxt").read_text())


def test_classifier_config_round_trips_with_expected_fields(tmp_path, artifacts):
    spec = make_spec({1: artifacts[1], 2: artifacts[2]}, production=1)
    assert build_repository(spec, tmp_path / "repo")
    cfg = config(tmp_path / "repo", CLASSIFIER)
    assert (cfg.name, cfg.backend, cfg.max_batch_size) == (CLASSIFIER, "onnxruntime", 256)
    assert cfg.default_model_filename == "model.onnx"
    assert list(cfg.version_policy.specific.versions) == [1, 2]
    (inp,) = cfg.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", mc.TYPE_FP32, [3, 32, 32])
    assert inp.format == mc.ModelInput.FORMAT_NCHW  # what NVIDIA's image_client.py reads
    assert cfg.parameters["classes"].string_value.split(",") == list(CLASSES)
    assert [float(v) for v in cfg.parameters["mean"].string_value.split(",")] == [0.4914, 0.4822, 0.4465]
    (out,) = cfg.output
    assert (out.name, out.data_type, list(out.dims)) == ("logits", mc.TYPE_FP32, [10])
    assert out.label_filename == "labels.txt"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 1000
    (group,) = cfg.instance_group
    assert (group.count, group.kind) == (1, mc.ModelInstanceGroup.KIND_CPU)
    assert (tmp_path / "repo" / CLASSIFIER / "labels.txt").read_text().splitlines() == list(CLASSES)


def test_ensemble_routes_to_the_explicit_production_version(tmp_path, artifacts):
    spec = make_spec({1: artifacts[1], 2: artifacts[2]}, production=1)
    build_repository(spec, tmp_path / "repo")
    cfg = config(tmp_path / "repo", "cifar10")
    assert cfg.platform == "ensemble" and cfg.max_batch_size == 64
    steps = [(s.model_name, s.model_version) for s in cfg.ensemble_scheduling.step]
    assert steps == [("preprocess", 1), (CLASSIFIER, 1), ("postprocess", 1)]  # never -1
    # Triton's common image protocol: one BYTES input, one labelled output (classification extension).
    (inp,) = cfg.input
    assert (inp.name, inp.data_type, list(inp.dims)) == ("IMAGE", mc.TYPE_STRING, [1])
    (out,) = cfg.output
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == (
        "PROBABILITIES",
        mc.TYPE_FP32,
        [10],
        "labels.txt",
    )
    assert (tmp_path / "repo" / "cifar10" / "labels.txt").read_text().splitlines() == list(CLASSES)
    assert cfg.parameters["classes"].string_value.split(",") == list(CLASSES)
    assert (tmp_path / "repo" / "cifar10" / "1").is_dir()


def test_python_model_configs_carry_their_parameters(tmp_path, artifacts):
    build_repository(make_spec({1: artifacts[1]}, production=1), tmp_path / "repo")
    pre = config(tmp_path / "repo", "preprocess")
    assert pre.backend == "python" and pre.input[0].dims == [1] and pre.input[0].data_type == mc.TYPE_STRING
    assert [float(x) for x in pre.parameters["std"].string_value.split(",")] == [0.2470, 0.2435, 0.2616]
    post = config(tmp_path / "repo", "postprocess")
    assert post.parameters["target_model"].string_value == CLASSIFIER
    assert post.parameters["target_version"].string_value == "1"
    for name in ("preprocess", "postprocess"):
        source = (tmp_path / "repo" / name / "1" / "model.py").read_bytes()
        assert source == repo_mod.python_model_source(name)
        (pyc,) = (tmp_path / "repo" / name / "1" / "__pycache__").glob("model.*.pyc")
        assert int.from_bytes(pyc.read_bytes()[4:8], "little") == 0b11  # checked-hash pyc


def test_tensorrt_classifier_uses_plan_files(tmp_path, artifacts):
    trt = ServedModel("wrn_trt", "tensorrt", (ServedVersion(3, artifacts[3]),), 3, 64, kind="KIND_GPU")
    build_repository(make_spec({1: artifacts[1]}, production=1, extra=(trt,)), tmp_path / "repo")
    cfg = config(tmp_path / "repo", "wrn_trt")
    assert (cfg.platform, cfg.backend, cfg.default_model_filename) == (
        "tensorrt_plan",
        "tensorrt",
        "model.plan",
    )
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert (tmp_path / "repo" / "wrn_trt" / "3" / "model.plan").read_bytes() == artifacts[3].read_bytes()


def test_model_files_are_real_files_with_the_artifact_bytes(tmp_path, artifacts):
    build_repository(make_spec({1: artifacts[1], 2: artifacts[2]}, production=2), tmp_path / "repo")
    for v in (1, 2):
        path = tmp_path / "repo" / CLASSIFIER / str(v) / "model.onnx"
        assert path.is_file() and not path.is_symlink()
        assert path.read_bytes() == artifacts[v].read_bytes()
    assert not any(p.is_symlink() for p in (tmp_path / "repo").rglob("*"))


def test_build_is_idempotent(tmp_path, artifacts):
    spec = make_spec({1: artifacts[1]}, production=1)
    dest = tmp_path / "repo"
    assert build_repository(spec, dest) is True
    before = snapshot(dest)
    assert build_repository(spec, dest) is False
    assert snapshot(dest) == before  # same inodes: nothing was rewritten
    assert build_repository(make_spec({1: artifacts[1], 2: artifacts[2]}, production=1), dest) is True
    assert list(config(dest, CLASSIFIER).version_policy.specific.versions) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry", "repo"]  # no temp or lock files


def test_repository_lock_is_reentrant_but_exclusive(tmp_path):
    outcome = []

    def contender():
        try:
            with repository_lock(tmp_path / "repo", blocking=False):
                outcome.append("acquired")
        except RepositoryError as exc:
            outcome.append(str(exc))

    with repository_lock(tmp_path / "repo"), repository_lock(tmp_path / "repo"):
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join()
    assert len(outcome) == 1 and "being rewritten by another build or rollout" in outcome[0]
    contender()
    assert outcome[-1] == "acquired"


def test_failed_build_leaves_previous_repository_untouched(tmp_path, artifacts, monkeypatch):
    dest = tmp_path / "repo"
    build_repository(make_spec({1: artifacts[1]}, production=1), dest)
    before = snapshot(dest)
    original = repo_mod._add_bytecode

    def explode(root, rel, old):
        original(root, rel, old)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(repo_mod, "_add_bytecode", explode)
    with pytest.raises(OSError, match="simulated"):
        build_repository(make_spec({1: artifacts[1], 2: artifacts[2]}, production=2), dest)
    assert snapshot(dest) == before
    assert [p.name for p in tmp_path.iterdir() if ".build-" in p.name] == []


def test_swap_without_renameat2_still_replaces_whole_tree(tmp_path, artifacts, monkeypatch):
    monkeypatch.setattr(atomic, "exchange", lambda a, b: False)
    dest = tmp_path / "repo"
    build_repository(make_spec({1: artifacts[1]}, production=1), dest)
    assert build_repository(make_spec({2: artifacts[2]}, production=2), dest)
    assert sorted(p.name for p in (dest / CLASSIFIER).iterdir()) == ["2", "config.pbtxt", "labels.txt"]
    assert [p.name for p in tmp_path.iterdir() if ".build-" in p.name] == []


def test_refuses_to_replace_a_foreign_directory(tmp_path, artifacts):
    dest = tmp_path / "repo"
    (dest / "something").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="not written by build_repository"):
        build_repository(make_spec({1: artifacts[1]}, production=1), dest)
    assert (dest / "something").is_dir()


def test_spec_is_stored_and_round_trips(tmp_path, artifacts):
    spec = make_spec({1: artifacts[1], 2: artifacts[2]}, production=2)
    build_repository(spec, tmp_path / "repo")
    assert read_deployed_spec(tmp_path / "repo") == spec
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert read_deployed_spec(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"production": 7}, "production version 7"),
        ({"backend": "pytorch"}, "backend must be one of"),
        ({"name": "preprocess"}, "must be unique"),
        ({"preferred_batch_sizes": (512,)}, "preferred batch sizes"),
        ({"versions": ()}, "at least one version"),
    ],
)
def test_invalid_classifier_is_rejected_with_the_field_named(artifacts, change, message):
    spec = make_spec({1: artifacts[1]}, production=1)
    bad = dataclasses.replace(spec.classifiers[0], **change)
    with pytest.raises(SpecError, match=message):
        dataclasses.replace(spec, classifiers=(bad,), ensemble_target=bad.name).validate()


def test_invalid_repository_spec_is_rejected(tmp_path, artifacts):
    spec = make_spec({1: artifacts[1]}, production=1)
    with pytest.raises(SpecError, match="max_image_bytes"):
        dataclasses.replace(spec, max_image_bytes=10).validate()
    with pytest.raises(SpecError, match="no classifier named"):
        dataclasses.replace(spec, ensemble_target="missing").validate()
    missing = make_spec({1: tmp_path / "gone.onnx"}, production=1)
    with pytest.raises(SpecError, match="artifact of version 1 not found"):
        build_repository(missing, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_rollout_plan_stages_before_switching_and_retires_last(artifacts):
    old = make_spec({1: artifacts[1]}, production=1)
    new = make_spec({2: artifacts[2]}, production=2)
    phases = rollout_plan(old, new)
    assert [p for p, _ in phases] == ["stage", "switch", "retire"]
    (_, stage), (_, switch), (_, retire) = phases
    assert (stage.target.version_numbers, stage.target.production) == ((1, 2), 1)
    assert (switch.target.version_numbers, switch.target.production) == ((1, 2), 2)
    assert retire == new
    assert [p for p, _ in rollout_plan(None, new)] == ["deploy"]
    keep_both = make_spec({1: artifacts[1], 2: artifacts[2]}, production=2)
    assert [p for p, _ in rollout_plan(old, keep_both)] == ["stage", "switch"]


def test_generations_change_only_for_affected_models_and_travel_in_each_config(artifacts, tmp_path):
    v1 = model_generations(make_spec({1: artifacts[1]}, production=1))
    staged = model_generations(make_spec({1: artifacts[1], 2: artifacts[2]}, production=1))
    switched = model_generations(make_spec({1: artifacts[1], 2: artifacts[2]}, production=2))
    assert {k for k in v1 if v1[k] != staged[k]} == {CLASSIFIER}
    # preprocess too: it labels its input statistics with production's version (and bins by its reference)
    assert {k for k in staged if staged[k] != switched[k]} == {"preprocess", "postprocess", "cifar10"}
    moved = tmp_path / "elsewhere.onnx"  # the same registry version from another cache: not a change
    moved.write_bytes(artifacts[1].read_bytes())
    assert model_generations(make_spec({1: moved}, production=1)) == v1
    files, _ = repository_layout(make_spec({1: artifacts[1]}, production=1))
    for model, digest in v1.items():  # what a server returns from get_model_config carries it
        config = parse(files[f"{model}/config.pbtxt"].decode())
        assert config.parameters["generation"].string_value == digest


def test_a_mount_of_the_parent_folder_sees_every_swap_a_mount_of_the_repository_does_not(artifacts, tmp_path):
    """What compose.yaml relies on, reproduced without Docker.

    A bind mount pins the directory it was given, exactly like a directory file descriptor opened
    before the swap. Through a descriptor of the folder holding the repository (what compose mounts)
    the next sync's tree is visible; through one of the repository itself, the old tree stays.
    """
    parent = tmp_path / "triton"
    repo = parent / "model_repository"
    build_repository(make_spec({1: artifacts[1]}, production=1), repo)
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    repo_fd = os.open(repo, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert build_repository(make_spec({2: artifacts[2]}, production=2), repo)
        via_parent = Path(f"/proc/self/fd/{parent_fd}") / "model_repository"
        via_repo = Path(f"/proc/self/fd/{repo_fd}")
        assert (via_parent / CLASSIFIER / "2" / "model.onnx").read_bytes() == artifacts[2].read_bytes()
        assert read_deployed_spec(via_parent).target.production == 2
        assert not (via_repo / CLASSIFIER / "2").exists()  # the pinned view never gets version 2
    finally:
        os.close(parent_fd)
        os.close(repo_fd)


def test_a_release_puts_the_router_between_preprocess_and_postprocess(tmp_path, artifacts):
    from serving.repository.spec import Release
    from serving.rollout.plan import model_names

    base = make_spec({1: artifacts[1], 2: artifacts[2]}, production=1)
    spec = dataclasses.replace(base, release=Release(CLASSIFIER, 2, shadow_fraction=0.25, canary_weight=0.1))
    build_repository(spec, tmp_path / "repo")
    ensemble = config(tmp_path / "repo", "cifar10")
    steps = [(s.model_name, s.model_version) for s in ensemble.ensemble_scheduling.step]
    assert steps == [("router", 1), ("postprocess", 1)]  # the router decodes: no extra python step
    assert dict(ensemble.ensemble_scheduling.step[1].input_map) == {"LOGITS": "logits", "ROUTE": "route"}
    router = config(tmp_path / "repo", "router")
    assert [(i.name, i.data_type) for i in router.input] == [("IMAGE", mc.TYPE_STRING)]
    pre = config(tmp_path / "repo", "preprocess")
    for key in ("mean", "std", "max_bytes", "max_pixels", "resample"):  # decodes exactly as preprocess
        assert router.parameters[key].string_value == pre.parameters[key].string_value
    shipped = tmp_path / "repo" / "router" / "1"
    decoder = repo_mod.python_model_source("image_decoding")  # preprocess's own decoder, byte for byte
    assert (shipped / "image_decoding.py").read_bytes() == decoder
    assert (tmp_path / "repo" / "preprocess" / "1" / "image_decoding.py").read_bytes() == decoder
    assert sorted(p.name.split(".")[0] for p in (shipped / "__pycache__").iterdir()) == [
        "image_decoding",
        "input_statistics",
        "model",
        "quality_metrics",
    ]
    params = {k: v.string_value for k, v in router.parameters.items()}
    assert (params["production_model"], params["production_version"]) == (CLASSIFIER, "1")
    assert (params["candidate_model"], params["candidate_version"]) == (CLASSIFIER, "2")
    assert (float(params["shadow_fraction"]), float(params["canary_weight"])) == (0.25, 0.1)
    assert params["route_key"] == "route-key" and not router.model_transaction_policy.decoupled
    post = config(tmp_path / "repo", "postprocess")
    assert post.parameters["candidate_version"].string_value == "2"
    # ROUTE is optional, so the same postprocess serves the ensemble with and without the router.
    assert [(i.name, i.optional) for i in post.input] == [("LOGITS", False), ("ROUTE", True)]
    assert model_names(spec)[-2:] == ["router", "cifar10"] and "router" not in model_names(base)
    assert read_deployed_spec(tmp_path / "repo") == spec and spec_from_dict(spec_to_dict(spec)) == spec
    # Ending the release removes the router from the repository.
    build_repository(base, tmp_path / "repo")
    assert not (tmp_path / "repo" / "router").exists()


@pytest.mark.parametrize(
    ("release", "message"),
    [
        ({"candidate_version": 1}, "what production already serves"),
        ({"candidate_version": 3}, "is not served"),
        ({"canary_weight": 1.5}, r"must lie in \[0, 1\]"),
        ({"shadow_fraction": -0.1}, r"must lie in \[0, 1\]"),
        ({"candidate_model": "nope"}, "no classifier named"),
    ],
)
def test_an_impossible_release_is_refused_with_the_reason(artifacts, release, message):
    from serving.repository.spec import Release

    spec = make_spec({1: artifacts[1], 2: artifacts[2]}, production=1)
    bad = Release(**({"candidate_model": CLASSIFIER, "candidate_version": 2} | release))
    with pytest.raises(SpecError, match=message):
        dataclasses.replace(spec, release=bad).validate()


def test_a_halt_order_outlives_the_rebuilds_of_the_rollout_that_retires_the_router(tmp_path, artifacts):
    """The release controller writes ``router/halt.json``; every tree swapped in while the router stays
    keeps it (the router may not have read it yet), and the router's retirement takes it along."""
    from serving.repository.spec import ROUTER_HALT_FILE, Release

    base = make_spec({1: artifacts[1], 2: artifacts[2]}, production=1)
    canary = dataclasses.replace(base, release=Release(CLASSIFIER, 2, shadow_fraction=0.0, canary_weight=0.5))
    repo = tmp_path / "repo"
    build_repository(canary, repo)
    assert config(repo, "router").parameters["halt_file"].string_value == ROUTER_HALT_FILE
    (repo / "router" / ROUTER_HALT_FILE).write_text('{"candidate_model": "x", "candidate_version": 2}')
    stage = dataclasses.replace(
        canary, release=Release(CLASSIFIER, 2, shadow_fraction=0.0, canary_weight=0.0)
    )
    assert build_repository(stage, repo)
    assert (repo / "router" / ROUTER_HALT_FILE).is_file()
    build_repository(base, repo)
    assert not (repo / "router").exists()
