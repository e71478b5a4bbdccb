"""A fleet for real: two embedded tritonservers on one S3 repository behind Debian's haproxy.

Clients call the public ``cifar10`` ensemble through the balancer (gRPC and HTTP) the whole time.
Every change goes through ``registry.sync(..., fleet=True)``, what ``cifar10 registry sync --fleet``
runs: the shared repository is written once per phase, and each replica is drained in haproxy
(through its runtime API), brought to the phase, and put back, one at a time. What is checked is
the contract of :mod:`serving.rollout.apply` for a fleet: no failed request, every replica in step
afterwards, a replica that cannot be reached refuses the change before anything moves, a replica
lost mid-change undoes it on the others, and a replica killed under load rejoins in step.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from common.object_store import Bucket
from common.params import Params, RegistryConfig, ServingConfig
from common.params_schema import FleetConfig
from registry import aliases, store
from registry.sync import sync
from scripts.local_balancer import haproxy
from serving.fleet.haproxy import Haproxy
from serving.fleet.replicas import Replica
from serving.fleet.status import replica_states
from serving.repository.s3_repository import S3Repository
from serving.rollout.apply import ApplyError
from serving.server.embedded import ADMIN_HEADER, EmbeddedServer, ServerConfig, free_ports
from tests.conftest import add_version
from tests.e2e.test_registry_triton import classify_bytes
from tests.prerequisites import need
from tests.serving.conftest import triton_or_skip
from tests.stores.conftest import objects

pytestmark = [pytest.mark.triton, pytest.mark.slow]
NAMES = ("r1", "r2")
PREFIX = "team/cifar10"


class Fleet:
    """Registered versions, a repository in S3, two replicas serving it, and haproxy in front."""

    def __init__(self, export_dir: Path, uri: str, s3, tmp: Path, exits: contextlib.ExitStack) -> None:
        self.mp = pytest.MonkeyPatch()
        exits.callback(self.mp.undo)
        self.mp.setenv("MLFLOW_TRACKING_URI", uri)
        for name, value in s3.env().items():
            self.mp.setenv(name, value)
        self.tmp = tmp
        self.cfg = RegistryConfig(
            model_prefix=f"f{uuid.uuid4().hex[:8]}", serve=("fp32",), ensemble_target="fp32"
        )
        self.name = self.cfg.registered_name("fp32")
        store.register_manifest(export_dir / "manifest.json", self.cfg)
        aliases.promote(self.name, "production", 1)
        self.s3, self.bucket = s3, s3.bucket(f"fleet{uuid.uuid4().hex[:8]}")
        self.uri = f"s3://127.0.0.1:{s3.port}/{self.bucket}/{PREFIX}"
        self.cache = tmp / "cache"
        serving = ServingConfig(warmup=False)
        sync(Params(profile="test", registry=self.cfg, serving=serving), self.uri, self.cache)
        self.header = (ADMIN_HEADER, "t" + uuid.uuid4().hex)
        self.ports = {name: free_ports(3) for name in NAMES}
        self.servers: dict[str, EmbeddedServer] = {}
        for name in NAMES:
            self.start(name)
        exits.callback(self.stop_all)
        for name in NAMES:
            self.servers[name].wait_ready(180)
        self.replicas = [
            Replica(n, f"127.0.0.1:{self.ports[n][1]}", f"127.0.0.1:{self.ports[n][0]}") for n in NAMES
        ]
        self.lb = exits.enter_context(
            haproxy([(r.name, r.grpc, r.http) for r in self.replicas], tmp / "haproxy")
        )
        self.haproxy = Haproxy(self.lb.admin)
        self.fleet = FleetConfig(
            replicas=[{"name": r.name, "grpc": r.grpc, "http": r.http} for r in self.replicas],
            balancer=self.lb.grpc, balancer_admin=self.lb.admin, drain_timeout_s=10.0,
        )  # fmt: skip
        self.params = Params(profile="test", registry=self.cfg, serving=serving, fleet=self.fleet)
        self.wait_balanced()

    def start(self, name: str) -> EmbeddedServer:
        http, grpc, metrics = self.ports[name]
        config = ServerConfig(
            model_repository=self.uri, http_port=http, grpc_port=grpc, metrics_port=metrics,
            log_file=self.tmp / f"{name}.log", restricted_header=self.header, exit_timeout_s=3,
        )  # fmt: skip
        self.servers[name] = EmbeddedServer(config).start()
        return self.servers[name]

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop(grace=10)

    def wait_balanced(self, timeout_s: float = 30) -> None:
        """Until haproxy's health checks have every replica UP in both backends."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = [r for r in self.haproxy.stats() if r["svname"] in NAMES]
            if len(rows) == 2 * len(NAMES) and all(r["status"] == "UP" for r in rows):
                return
            time.sleep(0.2)
        raise AssertionError(f"replicas not UP in haproxy: {[(r['svname'], r['status']) for r in rows]}")

    def roll(self, params: Params | None = None):
        return sync(params or self.params, self.uri, self.cache, header=self.header, fleet=True)

    def states(self) -> list[dict]:
        spec = S3Repository.at(self.uri, self.cache).deployed_spec()
        return replica_states(self.replicas, self.header, spec)

    def routed(self) -> dict[str, int]:
        """The classifier version each replica's ensemble routes to (its loaded config)."""
        out = {}
        for replica in self.replicas:
            client = httpclient.InferenceServerClient(replica.http)
            try:
                steps = client.get_model_config("cifar10")["ensemble_scheduling"]["step"]
            finally:
                client.close()
            out[replica.name] = int(next(s for s in steps if s["model_name"] == "wrn_fp32")["model_version"])
        return out


class Load:
    """Clients through the balancer (one gRPC, one HTTP) until stopped; every failure kept."""

    def __init__(self, fleet: Fleet, blob: bytes) -> None:
        self.blob, self.ok, self.failures = blob, 0, []
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(grpcclient, fleet.lb.grpc), daemon=True),
            threading.Thread(target=self._run, args=(httpclient, fleet.lb.http), daemon=True),
        ]

    def _run(self, module, url: str) -> None:
        client = module.InferenceServerClient(url)
        while not self.stop_event.is_set():
            try:
                classify_bytes(client, self.blob, module)
                self.ok += 1
            except Exception as exc:  # any failure is what these tests count
                detail = exc.message() if hasattr(exc, "message") else repr(exc)  # tritonclient's own
                self.failures.append((time.time(), f"{module.__name__}: {detail}"[:300]))
            time.sleep(0.002)
        client.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self.stop_event.set()
        for t in self.threads:
            t.join(30)


class Watch:
    """Polls haproxy's server states during a change: which replicas were drained, and together?"""

    def __init__(self, fleet: Fleet) -> None:
        self.haproxy, self.seen, self.together = fleet.haproxy, set(), False
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            rows = [r for r in self.haproxy.stats() if r["svname"] in NAMES]
            drained = {r["svname"] for r in rows if r["status"] == "DRAIN"}
            self.seen |= drained
            self.together |= len(drained) > 1
            time.sleep(0.02)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def fleet(small_export, s3_server, tmp_path_factory):
    triton_or_skip()
    need("haproxy")
    with contextlib.ExitStack() as exits:
        yield Fleet(*small_export, s3_server, tmp_path_factory.mktemp("fleet"), exits)


@pytest.fixture
def blob(small_prepared) -> bytes:
    return sorted((small_prepared / "test_images").rglob("*.*"))[0].read_bytes()


def in_step(fleet: Fleet) -> bool:
    return all(row.get("in_step") for row in fleet.states())


def test_promote_and_rollback_reach_every_replica_one_at_a_time_and_fail_no_request(fleet, blob):
    """... and in S3, a retired version's files go once every replica moved off it, and nothing
    outside the prefix is written or deleted (neighbours that share its start too)."""
    neighbours = {f"{PREFIX}x/keep": b"a", "team/other/keep": b"b", "keep": b"c"}
    bucket = Bucket(fleet.s3.endpoint, fleet.bucket)
    for key, data in neighbours.items():
        bucket.put(key, data, "0" * 64)
    v2 = add_version(fleet.name)
    with Load(fleet, blob) as load, Watch(fleet) as watch:
        aliases.promote(fleet.name, "production", v2)
        promoted = fleet.roll()
        assert fleet.routed() == {"r1": v2, "r2": v2}
        assert _versions_in_s3(fleet) == {v2}  # v1's files retired after both replicas moved
        aliases.rollback(fleet.name)
        fleet.roll()
        assert fleet.routed() == {"r1": 1, "r2": 1} and _versions_in_s3(fleet) == {1}
    assert load.failures == [] and load.ok > 20, load.failures[:3]
    assert promoted.servers == list(NAMES) and "switch" in promoted.phases
    assert watch.seen == set(NAMES) and not watch.together  # each drained, never both at once
    assert in_step(fleet)
    fleet.wait_balanced()  # both put back
    sync(fleet.params, fleet.uri, fleet.cache, prune=True)
    now = objects(fleet.s3, fleet.bucket)
    assert {k: now.get(k) for k in neighbours} == neighbours
    assert all(k.startswith(PREFIX + "/") or k in neighbours for k in now)


def _versions_in_s3(fleet: Fleet) -> set[int]:
    keys = objects(fleet.s3, fleet.bucket)
    return {
        int(k.split("/")[3])
        for k in keys
        if k.startswith(f"{PREFIX}/wrn_fp32/") and k.split("/")[3].isdigit()
    }


def test_an_unreachable_replica_refuses_the_change_before_anything_moves(fleet):
    spec_before = S3Repository.at(fleet.uri, fleet.cache).deployed_spec()
    dead = Replica("r3", f"127.0.0.1:{free_ports(1)[0]}")
    replicas = [*fleet.fleet.replicas, {"name": dead.name, "grpc": dead.grpc, "http": ""}]
    params = fleet.params.replace(fleet=fleet.fleet.replace(replicas=replicas))
    v = add_version(fleet.name)
    aliases.promote(fleet.name, "production", v)
    try:
        refused = r"every replica, nothing was changed: replica r3 \(127\.0\.0\.1:\d+\)"
        with pytest.raises(ApplyError, match=refused):
            fleet.roll(params)
    finally:
        aliases.rollback(fleet.name)
    assert S3Repository.at(fleet.uri, fleet.cache).deployed_spec() == spec_before
    assert fleet.routed() == {"r1": 1, "r2": 1} and in_step(fleet)


def test_a_replica_lost_mid_change_undoes_it_on_the_others_and_rejoins_in_step(fleet, blob):
    """r2 is killed while it is drained for the change (r1 has taken it): the change fails naming r2,
    r1 goes back, and r2 restarted serves what the repository (restored) says."""
    v = add_version(fleet.name)
    aliases.promote(fleet.name, "production", v)
    outcome: list = []

    def roll() -> None:
        try:
            outcome.append(fleet.roll())
        except Exception as exc:
            outcome.append(exc)

    with Load(fleet, blob) as load:
        thread = threading.Thread(target=roll)
        thread.start()
        deadline, drained = time.monotonic() + 60, False
        while time.monotonic() < deadline and not drained:
            drained = any(r["svname"] == "r2" and r["status"] == "DRAIN" for r in fleet.haproxy.stats())
            time.sleep(0.01)
        os.kill(fleet.servers["r2"].triton_pid, signal.SIGKILL)
        assert drained, "r2 was never drained for the change: the kill did not hit it mid-change"
        thread.join(120)
    aliases.rollback(fleet.name)
    assert isinstance(outcome[0], ApplyError), outcome
    assert "on replica r2" in str(outcome[0]) and "restored the previous repository" in str(outcome[0])
    assert load.failures == [], load.failures[:3]  # r2 was drained: nothing was in flight on it
    assert S3Repository.at(fleet.uri, fleet.cache).deployed_spec().target.production == 1
    r1 = fleet.states()[0]
    assert r1["in_step"] and r1["ready"]["wrn_fp32"] == [1], r1
    fleet.servers["r2"].stop(grace=5)
    fleet.start("r2").wait_ready(180)
    assert in_step(fleet) and fleet.routed() == {"r1": 1, "r2": 1}
    fleet.wait_balanced()


def test_a_replica_killed_under_load_costs_what_the_retries_cannot_cover_and_rejoins(fleet, blob):
    with Load(fleet, blob) as load:
        time.sleep(1.0)
        killed_at = time.time()
        os.kill(fleet.servers["r1"].triton_pid, signal.SIGKILL)
        time.sleep(2.0)
        fleet.servers["r1"].stop(grace=5)
        fleet.start("r1").wait_ready(180)
        fleet.wait_balanced()
        before = sum(int(r["stot"]) for r in fleet.haproxy.stats() if r["svname"] == "r1")  # both backends
        time.sleep(1.0)
    served = sum(int(r["stot"]) for r in fleet.haproxy.stats() if r["svname"] == "r1")
    print(f"replica killed under load: {len(load.failures)} failed of {load.ok + len(load.failures)}")
    assert [f for t, f in load.failures if t < killed_at] == []
    # haproxy retries what the dead replica reset or refused (retry-on, redispatch); a request it had
    # already forwarded whole is retried too (empty-response). What is left is counted, and bounded by
    # the requests one replica can hold at once (2 clients): anything more is a balancer misconfiguration.
    assert len(load.failures) <= 2, load.failures
    assert in_step(fleet) and fleet.routed() == {"r1": 1, "r2": 1}
    assert served > before  # traffic reaches the restarted replica again


@pytest.fixture(scope="module")
def release_fleet(fleet, prometheus_bin, small_prepared, tmp_path_factory):
    """The fleet plus a real Prometheus scraping both replicas, and a params file that names the fleet."""
    from tests.monitoring.test_live import Prometheus
    from tests.release.test_release_live import RELEASE, SERVING

    tmp = tmp_path_factory.mktemp("fleet_release")
    (tmp / "prom").mkdir()
    prometheus = Prometheus(prometheus_bin, tmp / "prom", [fleet.ports[n][2] for n in NAMES]).wait_ready()
    release = {k: list(v) if isinstance(v, tuple) else v for k, v in RELEASE.__dict__.items()}
    release.pop("prometheus_url")
    document = {
        "registry": {"model_prefix": fleet.cfg.model_prefix, "serve": ["fp32"], "ensemble_target": "fp32"},
        "serving": {"preferred_batch_sizes": list(SERVING.preferred_batch_sizes), "max_queue_delay_us": 0,
                    "python_queue_delay_us": 0, "warmup": False},
        "release": release,
        "monitoring": {"accuracy_drop": 0.9},  # as tests/release: the small model's estimate means little
        "fleet": {"replicas": [dict(r) for r in fleet.fleet.model_dump()["replicas"]],
                  "balancer": fleet.lb.grpc, "balancer_admin": fleet.lb.admin, "drain_timeout_s": 10.0},
    }  # fmt: skip
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(document))
    token = tmp / "admin-token"
    token.write_text(fleet.header[1])
    argv = ["release", "--params", str(params), "--repository", fleet.uri, "--cache", str(fleet.cache),
            "--admin-token-file", str(token), "--prometheus", prometheus.url,
            "--prepared", str(small_prepared)]  # fmt: skip
    yield argv, prometheus, tmp
    prometheus.stop()


def test_releases_move_every_replica_together_judged_on_the_whole_fleets_figures(
    fleet, release_fleet, small_export, blob
):
    """A good candidate reaches production on both replicas, the canary weight the same on each (the
    candidate's share of each replica's answers, counted by its own metrics); a label swap is rolled
    back at shadow on both, judged on figures summed over the two replicas. No request fails."""
    from benchmarks.onnx_variants import onnx_variant
    from tests.release.test_release_live import register_variant, run_in_process

    argv, prometheus, tmp = release_fleet
    source = small_export[0] / "model.fp32.onnx"
    production = aliases.alias_version(fleet.name, "production")
    good = register_variant(fleet.name, production, onnx_variant(source, tmp / "good.onnx", rotate=False))
    rotated = register_variant(fleet.name, production, onnx_variant(source, tmp / "rot.onnx", rotate=True))
    shares: dict[str, tuple[float, float]] = {}
    with Load(fleet, blob) as load:
        stop = threading.Event()

        def count_canary_shares() -> None:
            """Each replica's candidate share over the 50 % step so far, as long as the step lasts:
            the window grows with the step, so a slower host counts fewer answers a second, not
            fewer in all. A count is kept only if both routers still ran 50 % once it was read."""
            while not stop.is_set() and _canary_weight(fleet) != 0.5:
                time.sleep(0.2)
            began = time.monotonic()
            time.sleep(2.0)  # increase() needs two scrapes inside the step
            while not stop.is_set():
                counted = _candidate_shares(fleet, prometheus, good, f"{int(time.monotonic() - began)}s")
                if _canary_weight(fleet) != 0.5:
                    return
                shares.update(counted)
                time.sleep(0.5)

        watcher = threading.Thread(target=count_canary_shares, daemon=True)
        watcher.start()
        began = time.monotonic()
        done = run_in_process([*argv, "start", "--version", str(good)])
        good_s = time.monotonic() - began
        stop.set()
        watcher.join(10)
        assert done.returncode == 0, done.stderr[-3000:]
        assert aliases.alias_version(fleet.name, "production") == good
        assert fleet.routed() == {"r1": good, "r2": good} and in_step(fleet)
        began = time.monotonic()
        bad = run_in_process([*argv, "start", "--version", str(rotated), "--force", "--reason", "test"])
        bad_s = time.monotonic() - began
        status = json.loads(run_in_process([*argv, "status"]).stdout)
    assert bad.returncode == 1, bad.stderr[-3000:]
    assert aliases.alias_version(fleet.name, "production") == good
    assert fleet.routed() == {"r1": good, "r2": good} and in_step(fleet)
    assert [r["name"] for r in status["replicas"]] == list(NAMES) and all(
        r["in_step"] for r in status["replicas"]
    )
    assert load.failures == [] and load.ok > 50, load.failures[:3]
    print(f"two replicas: good release promoted in {good_s:.1f} s, label swap rolled back in {bad_s:.1f} s;"
          f" canary 50 %: candidate share of each replica's answers {shares}")  # fmt: skip
    # Each answer goes to the candidate with probability 0.5 on each replica: the share of n answers is
    # binomial, so it may stray 4.5 standard deviations (sqrt(0.25 / n)) from 0.5 on any host's speed.
    assert set(shares) == {"r1", "r2"}, shares
    assert all(n >= 20 and abs(share - 0.5) <= 4.5 * (0.25 / n) ** 0.5 for share, n in shares.values()), (
        shares
    )


def _canary_weight(fleet: Fleet) -> float | None:
    """The canary weight both replicas' loaded routers run with, or None while they differ."""
    weights = set()
    for replica in fleet.replicas:
        client = httpclient.InferenceServerClient(replica.http)
        try:
            config = client.get_model_config("router")
            weights.add(float(config["parameters"]["canary_weight"]["string_value"]))
        except Exception:
            weights.add(None)
        finally:
            client.close()
    return weights.pop() if len(weights) == 1 else None


def _candidate_shares(fleet: Fleet, prometheus, version: int, window: str) -> dict[str, tuple[float, float]]:
    """Per replica (scrape target): the candidate's share of the answers it counted, and their number."""
    rows = prometheus.query(f"sum by (instance, version) (increase(predicted_class_total[{window}]))")
    totals: dict[str, float] = {}
    candidate: dict[str, float] = {}
    for row in rows:
        instance = row["metric"]["instance"]
        value = float(row["value"][1])
        totals[instance] = totals.get(instance, 0.0) + value
        if row["metric"].get("version") == str(version):
            candidate[instance] = candidate.get(instance, 0.0) + value
    ports = {f"127.0.0.1:{p[2]}": name for name, p in fleet.ports.items()}
    return {ports[i]: (candidate.get(i, 0.0) / t, t) for i, t in totals.items() if t > 0 and i in ports}
