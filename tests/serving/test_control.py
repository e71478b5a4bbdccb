"""Rollouts on a live server: zero failed requests while production moves, and a corrupt version."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from serving.repository.build import build_repository, read_deployed_spec
from serving.rollout.apply import ApplyError, apply
from tests.conftest import fp32_tolerance
from tests.serving.conftest import (
    CLASSIFIER,
    encode,
    make_spec,
    ort_session,
    pack,
    random_image,
    reference_preprocess,
)

pytestmark = pytest.mark.triton
IMAGE = pack([encode(random_image(7), "PNG")])


@pytest.fixture(scope="module")
def live(launch, onnx_models, tmp_path_factory):
    repo = tmp_path_factory.mktemp("rollout") / "model_repository"
    build_repository(make_spec({1: onnx_models[1]}, production=1), repo)
    return launch(repo), repo


class Hammer:
    """Background threads sending ensemble requests until stopped; records every outcome."""

    def __init__(self, endpoint: str, threads: int = 2) -> None:
        self.endpoint, self.stop_event = endpoint, threading.Event()
        self.top_prob: list[float] = []
        self.latency: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(
            self.endpoint
        )  # one per thread: gevent clients aren't shared
        while not self.stop_event.is_set():
            tensor = httpclient.InferInput("IMAGE", list(IMAGE.shape), "BYTES")
            tensor.set_data_from_numpy(IMAGE)
            start = time.perf_counter()
            try:
                self.top_prob.append(
                    float(client.infer("cifar10", [tensor]).as_numpy("PROBABILITIES")[0].max())
                )
                self.latency.append(time.perf_counter() - start)
            except Exception as exc:  # any failure at all is what this test is about
                self.failures.append(repr(exc))
        client.close()

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)


def expected_top_prob(artifact) -> float:
    x = reference_preprocess(IMAGE[0, 0])[None]
    (logits,) = ort_session(artifact).run(["logits"], {"input": x})[0]
    probs = np.exp(logits - logits.max())
    return float(probs.max() / probs.sum())


def versions_ready(server, name: str) -> set[int]:
    client = httpclient.InferenceServerClient(server.http_endpoint)
    try:
        index = client.get_model_repository_index(headers=server.admin_headers)
    finally:
        client.close()
    return {int(m["version"]) for m in index if m["name"] == name and m.get("state") == "READY"}


def test_apply_moves_production_without_a_single_failed_request(live, onnx_models):
    server, repo = live
    header = server.config.restricted_header
    with Hammer(server.http_endpoint) as hammer:
        time.sleep(0.5)
        staged = apply(
            server.url_grpc, read_deployed_spec(repo), make_spec(onnx_models, production=2), header, repo
        )
        assert staged == ["stage", "switch"]
        assert versions_ready(server, CLASSIFIER) == {1, 2}
        retired = apply(
            server.url_grpc, read_deployed_spec(repo), make_spec({2: onnx_models[2]}, 2), header, repo
        )
        assert retired == ["retire"]
        time.sleep(0.5)
    assert hammer.failures == []
    assert len(hammer.top_prob) >= 20
    # Speed is reported, not asserted (it depends on the machine): a load issued over HTTP stalled
    # some clients for the whole load (seconds), which is why apply() loads over gRPC.
    print(f"worst request during the rollout: {max(hammer.latency):.3f} s of {len(hammer.latency)}")
    v1, v2 = expected_top_prob(onnx_models[1]), expected_top_prob(onnx_models[2])
    bound = math.expm1(2 * fp32_tolerance())  # what a logit shift within the fp32 tolerance allows
    assert abs(hammer.top_prob[0] - v1) <= bound and abs(hammer.top_prob[-1] - v2) <= bound
    assert versions_ready(server, CLASSIFIER) == {2}
    assert apply(server.url_grpc, read_deployed_spec(repo), read_deployed_spec(repo), header, repo) == []


def test_corrupt_new_version_fails_to_load_and_the_previous_keeps_serving(live, onnx_models, corrupt_model):
    server, repo = live
    before = read_deployed_spec(repo)
    serving_version = before.target.production
    broken = make_spec({serving_version: before.target.versions[0].artifact, 3: corrupt_model}, production=3)
    with Hammer(server.http_endpoint) as hammer, pytest.raises(ApplyError) as failed:
        apply(server.url_grpc, before, broken, server.config.restricted_header, repo)
    message = str(failed.value)
    assert "stage" in message and "version 3" in message and "cannot load" in message
    assert "restored the previous repository" in message
    assert hammer.failures == [] and hammer.top_prob
    assert read_deployed_spec(repo) == before
    assert versions_ready(server, CLASSIFIER) == {serving_version}
    with pytest.raises(ApplyError, match="restricted"):
        apply(server.url_grpc, before, broken, ("x-cifar10-admin", "wrong-token"), repo)
    assert read_deployed_spec(repo) == before  # refused before anything was written


def test_rollout_works_after_the_registry_pruned_the_serving_artifact(live, onnx_models, tmp_path):
    server, repo = live
    header = server.config.restricted_header
    pruned = tmp_path / "pruned_v4.onnx"
    pruned.write_bytes(onnx_models[1].read_bytes())
    apply(server.url_grpc, read_deployed_spec(repo), make_spec({4: pruned}, production=4), header, repo)
    pruned.unlink()  # the registry garbage-collected it; the repository still holds a copy
    done = apply(
        server.url_grpc, read_deployed_spec(repo), make_spec({5: onnx_models[2]}, production=5), header, repo
    )
    assert done == ["stage", "switch", "retire"]
    assert versions_ready(server, CLASSIFIER) == {5}


def loaded_generations(server, names) -> dict[str, str | None]:
    from serving.rollout.admin import ModelAdmin

    admin = ModelAdmin(server.url_grpc, server.config.restricted_header, 30)
    try:
        return {name: admin.generation(name) for name in names}
    finally:
        admin.close()


@pytest.mark.parametrize(
    "interrupted_at",
    [pytest.param("stage", marks=pytest.mark.full), "switch", pytest.param("retire", marks=pytest.mark.full)],
)  # switch: the configs change, the version sets do not (the case the READY check missed)
def test_a_rollout_killed_after_writing_and_before_loading_is_finished_by_the_next_apply(
    live, onnx_models, interrupted_at
):
    """A controller killed between writing a phase's repository and loading it leaves a repository that
    already says the new state while the server serves the old one: rerunning the rollout from what
    the repository says must load what the server lacks, whatever phase was cut short."""
    from serving.repository.build import model_generations
    from serving.rollout.plan import model_names, rollout_plan

    server, repo = live
    header = server.config.restricted_header
    start = make_spec({1: onnx_models[1]}, production=1)
    apply(server.url_grpc, read_deployed_spec(repo), start, header, repo)
    target = make_spec({2: onnx_models[2]}, production=2)
    plan = dict(rollout_plan(start, target))
    done = [phase for phase in plan if phase != interrupted_at][: list(plan).index(interrupted_at)]
    if done:  # the phases before the cut completed on the server
        apply(server.url_grpc, read_deployed_spec(repo), plan[done[-1]], header, repo)
    build_repository(plan[interrupted_at], repo)  # written, never loaded: the controller died here
    resumed = read_deployed_spec(repo)
    assert resumed == plan[interrupted_at]
    assert apply(server.url_grpc, resumed, target, header, repo)  # something had to be loaded
    assert loaded_generations(server, model_names(target)) == model_generations(target)
    assert versions_ready(server, CLASSIFIER) == {2}
    with Hammer(server.http_endpoint, threads=1) as hammer:
        time.sleep(0.5)
    bound = math.expm1(2 * fp32_tolerance())
    assert hammer.failures == [] and abs(hammer.top_prob[-1] - expected_top_prob(onnx_models[2])) <= bound
