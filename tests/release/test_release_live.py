"""``cifar10 release`` against a real tritonserver, a real Prometheus and a team's MLflow registry.

One server, one Prometheus (1 s scrapes) and one registry serve the module, and a client thread
keeps calling the public ``cifar10`` ensemble the whole time (a third of its requests carry a
``route-key``): every test asserts that none of those requests failed while it ran. Candidates
are real variants of the exported small model, registered as new versions: ``good`` is the same
network under another file (identical answers), ``rotated`` answers class ``k+1`` for class ``k``
(test figures copied from production, so only live traffic can tell), ``weaker`` is tagged with a
test accuracy 10 points below production's, ``corrupt`` is not an ONNX file at all. The windows
are seconds (``RELEASE``), not minutes.

The registry is a team's: ``cifar10 stores mlflow-server`` on a real PostgreSQL, artifacts proxied
to a real S3 server, and the controllers' environment holds only its URL. Its database is restarted
in the middle of a release once (``test_a_postgres_restart_during_a_release_does_not_lose_it``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from benchmarks import onnx_variants
from benchmarks.onnx_variants import onnx_variant
from common.params import Params, RegistryConfig, ReleaseConfig, ServingConfig
from registry import aliases, release_record, store
from registry.sync import sync
from serving.server.embedded import EmbeddedServer, private_config
from tests.conftest import make_image_folder
from tests.monitoring.test_live import Prometheus
from tests.prerequisites import ROOT
from tests.serving.conftest import triton_or_skip

pytestmark = [pytest.mark.triton, pytest.mark.slow]
RELEASE = ReleaseConfig(
    shadow_fraction=0.5,
    shadow_window_s=4,
    canary_weights=(0.5, 1.0),
    canary_window_s=3,
    check_interval_s=1,
    min_images=20,
    owner_timeout_s=60,
    # Latency is judged, but the tiny model answers in ~2 ms on a host this test keeps busy (client,
    # controller, CLI start-ups): a generous slack keeps the verdicts about answers, not scheduling.
    p99_slack_ms=50.0,
    # The small test model scores 40 % on its test split, where the derived bounds (release.limits)
    # are void; its variants are the same network, so they agree on every image or misbehave.
    min_agreement=0.9,
    min_class_agreement=0.9,
    min_class_images=5,
    latency_settle_s=1.0,
)
SERVING = ServingConfig(preferred_batch_sizes=(8,), max_queue_delay_us=0, python_queue_delay_us=0)


def register_variant(name: str, base: int, path: Path, accuracy_delta: float = 0.0) -> int:
    """``path`` as a new version of ``name``, tagged like version ``base`` but ``accuracy_delta``."""
    from registry import store

    accuracy = float(store.client().get_model_version(name, str(base)).tags["test_accuracy"])
    return onnx_variants.register_variant(
        name, base, path, {"test_accuracy": f"{accuracy + accuracy_delta:.4f}"}
    )


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"not an ONNX protobuf" + bytes(range(256)) * 16)
    return path


class Load:
    """A client thread calling ``cifar10`` until stopped; every failure is kept with its message, every
    answer as ``(sent, answered, image index, top-1)``."""

    def __init__(self, grpc_url: str, images: list[bytes]) -> None:
        self.url, self.images = grpc_url, images
        self.ok, self.failures = 0, []
        self.answers: list[tuple[float, float, int, int]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from client.core.transport import image_batch

        client = grpcclient.InferenceServerClient(self.url)
        rng = np.random.default_rng(0)  # images in random order: traffic whose class mix is stationary
        i = 0
        while not self._stop.is_set():
            index = int(rng.integers(len(self.images)))
            inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(image_batch([self.images[index]]))
            params = {"route-key": f"user-{i % 7}"} if i % 3 == 0 else None
            sent = time.time()
            try:
                out = client.infer("cifar10", [inp], parameters=params, client_timeout=30)
                self.answers.append((sent, time.time(), index, int(out.as_numpy("PROBABILITIES").argmax())))
                self.ok += 1
            except Exception as exc:
                self.failures.append((time.time(), str(exc)[:300]))
            i += 1
            time.sleep(0.004)  # leave the 2-core host some room for the controller
        client.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


def run_in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """``cifar10 argv`` in this process (the same ``main``, minus an interpreter start-up),
    with its exit code, stdout and stderr as ``subprocess.run`` would give them."""
    import contextlib
    import io
    import logging

    from commands.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
    logging.getLogger().handlers.clear()
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


class ReleaseStack:
    def __init__(self, small_export, tmp: Path, prometheus_bin: str, prepared: Path) -> None:
        self.prepared = prepared  # its 20 labelled test images: the shadow step's labelled probe
        export_dir, uri = small_export  # the export's runs live there, so its versions register there
        self.tmp = tmp
        self.env = os.environ | {"MLFLOW_TRACKING_URI": uri}
        self.mp = pytest.MonkeyPatch()
        self.mp.setenv("MLFLOW_TRACKING_URI", self.env["MLFLOW_TRACKING_URI"])
        self.mp.chdir(tmp)
        self.cfg = RegistryConfig(
            model_prefix=f"r{uuid.uuid4().hex[:8]}", serve=("fp32",), ensemble_target="fp32"
        )
        self.name = self.cfg.registered_name("fp32")
        store.register_manifest(export_dir / "manifest.json", self.cfg)
        aliases.promote(self.name, "production", 1)
        source = self.export_fp32 = export_dir / "model.fp32.onnx"
        self.versions = {
            "good": register_variant(self.name, 1, onnx_variant(source, tmp / "good.onnx", rotate=False)),
            "rotated": register_variant(
                self.name, 1, onnx_variant(source, tmp / "rotated.onnx", rotate=True)
            ),
            "corrupt": register_variant(self.name, 1, _corrupt(tmp / "corrupt.onnx")),
            "weaker": register_variant(
                self.name, 1, onnx_variant(source, tmp / "weaker.onnx", rotate=False), accuracy_delta=-0.1
            ),
        }
        self.repo, self.cache = tmp / "model_repository", tmp / "cache"
        self.params = Params(profile="test", registry=self.cfg, serving=SERVING, release=RELEASE)
        self.params_file = self.write_params(tmp / "params.yaml", RELEASE)
        # An abort must find the release still in its shadow step, however slowly the host starts it.
        self.slow_params = self.write_params(tmp / "params-slow.yaml", RELEASE.replace(shadow_window_s=120))
        sync(self.params, self.repo, self.cache)
        config = private_config(self.repo, tmp, ort_threads=1)  # free ports, its own admin token
        self.header = config.restricted_header
        self.token_file = tmp / "admin-token"
        self.token_file.write_text(self.header[1])
        self.server = EmbeddedServer(config)
        self.server.start().wait_ready(180)
        self.prometheus = Prometheus(prometheus_bin, tmp / "prom", config.metrics_port).wait_ready()
        images = make_image_folder(tmp / "traffic", {"test": 4})
        self.images = [p.read_bytes() for p in sorted((images / "test").rglob("*.*"))]
        self.production_top1 = self.top1_of_each_image()  # production alone serves: its own answers
        self.load = Load(self.server.url_grpc, self.images)

    def top1_of_each_image(self) -> list[int]:
        from client.core.transport import image_batch

        client = grpcclient.InferenceServerClient(self.server.url_grpc)
        out = []
        for image in self.images:
            inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(image_batch([image]))
            out.append(int(client.infer("cifar10", [inp]).as_numpy("PROBABILITIES").argmax()))
        client.close()
        return out

    def answers_like(self, since: float, mapping) -> list[tuple[float, float, int, int]]:
        """The clients' answers since ``since`` that are ``mapping(production's answer)`` instead."""
        return [
            a
            for a in self.load.answers[:]
            if a[0] >= since
            and a[3] == mapping(self.production_top1[a[2]])
            and a[3] != self.production_top1[a[2]]
        ]

    def write_params(self, path: Path, release: ReleaseConfig) -> Path:
        settings = {k: list(v) if isinstance(v, tuple) else v for k, v in release.__dict__.items()}
        settings.pop("prometheus_url")
        path.write_text(
            yaml.safe_dump(
                {
                    "registry": {
                        "model_prefix": self.cfg.model_prefix,
                        "serve": ["fp32"],
                        "ensemble_target": "fp32",
                    },
                    "serving": {
                        "preferred_batch_sizes": [8],
                        "max_queue_delay_us": 0,
                        "python_queue_delay_us": 0,
                    },
                    "release": settings,
                    # The small model's reference is 40 synthetic validation images and the traffic
                    # repeats 40 others: its absolute estimate means little, so only the candidate-vs-
                    # production estimate is judged here (the reference drop: tests/release/test_judge.py).
                    "monitoring": {"accuracy_drop": 0.9},
                }
            )
        )
        return path

    def cli(self, *args: str, timeout: float = 240, wait: bool = True, params: Path | None = None):
        cmd = [
            sys.executable,
            "-m",
            "commands",
            "release",
            "--params",
            str(params or self.params_file),
            "--repository",
            str(self.repo),
            "--cache",
            str(self.cache),
            "--server",
            self.server.url_grpc,
            "--admin-token-file",
            str(self.token_file),
            "--prometheus",
            self.prometheus.url,
            "--prepared",
            str(self.prepared),
            *args,
        ]
        if not wait:  # a controller of its own: it can be killed, and runs beside the test
            return subprocess.Popen(
                cmd, env=self.env, cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        return run_in_process(cmd[3:])

    def record(self):
        return release_record.read(self.name)

    def wait_for(self, controller: subprocess.Popen, done, timeout: float = 90):
        """The release record once ``done(record)`` holds, while ``controller`` runs."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.record()
            if record is not None and done(record):
                return record
            assert time.monotonic() < deadline and controller.poll() is None, controller.communicate()
            time.sleep(0.3)

    def ensemble_steps(self) -> list[tuple[str, int]]:
        with urllib.request.urlopen(f"{self.server.url_http}/v2/models/cifar10/config", timeout=10) as resp:
            config = json.load(resp)
        return [(s["model_name"], int(s["model_version"])) for s in config["ensemble_scheduling"]["step"]]

    def close(self) -> None:
        self.load.stop()
        self.prometheus.stop()
        self.server.stop(grace=20)
        self.mp.undo()


@pytest.fixture(scope="module")
def stack(team_mlflow, small_weights, small_prepared, prometheus_bin, tmp_path_factory) -> ReleaseStack:
    """The small model exported by ``cifar10 export`` into the team's MLflow, and a stack on it."""
    from tests.stores.test_team_mlflow import cifar10, small_params

    triton_or_skip()
    tmp = tmp_path_factory.mktemp("release")
    (tmp / "prom").mkdir()
    params = small_params(tmp / "export-params.yaml", f"x{uuid.uuid4().hex[:6]}", ("fp32", "int8"))
    argv = ["export", "--params", str(params), "--checkpoint", str(small_weights), "--data",
            str(small_prepared), "--out", "export", "--report", "export.json"]  # fmt: skip
    exported = cifar10(*argv, env=team_mlflow.client_env(), cwd=tmp)
    s = ReleaseStack((tmp / "export", team_mlflow.uri), tmp, prometheus_bin, small_prepared)
    s.said = [exported]  # what the commands printed, searched for secrets
    s.env = team_mlflow.client_env()  # controllers get the server's URL only, no database password or S3 key
    yield s
    s.close()


@pytest.fixture
def no_failed_requests(stack: ReleaseStack):
    """The test's whole span under load: the client thread must see answers, and no failure."""
    ok, failed = stack.load.ok, len(stack.load.failures)
    yield
    assert stack.load.ok > ok, "the load thread stopped answering"
    assert stack.load.failures[failed:] == [], stack.load.failures[failed:][:3]


def test_the_commands_ran_against_the_team_stores_and_no_secret_leaked(stack, team_mlflow, tmp_path):
    """``cifar10 export`` (the fixture), ``registry list`` and ``registry sync`` as processes that know
    only the server's URL: the registry is in PostgreSQL, the files in the bucket, no secret shown."""
    import psycopg
    from mlflow.tracking import MlflowClient

    from tests.stores.conftest import objects
    from tests.stores.test_team_mlflow import cifar10

    env, params = team_mlflow.client_env(), str(stack.params_file)
    sync = ["registry", "--params", params, "sync", "--repository", "repo", "--cache", "cache"]
    stack.said += [
        cifar10("registry", "--params", params, "list", env=env, cwd=tmp_path),
        cifar10(*sync, env=env, cwd=tmp_path),
    ]
    assert (tmp_path / "repo" / "wrn_fp32" / "1" / "model.onnx").is_file()  # downloaded through the proxy
    with psycopg.connect(team_mlflow.database, password=team_mlflow.pg.password) as conn:
        query = "SELECT count(*) FROM model_versions WHERE name = %s"
        assert conn.execute(query, (stack.name,)).fetchone()[0] >= 5  # v1 and the four variants
    stored = objects(team_mlflow.s3, team_mlflow.bucket)
    assert any(k.startswith("mlflow/") and k.endswith("model.fp32.onnx") for k in stored), sorted(stored)[:5]
    client = MlflowClient(team_mlflow.uri)
    recorded = [json.dumps(dict(v.tags)) for v in client.search_model_versions(f"name = '{stack.name}'")]
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            recorded += [*run.data.params.values(), *run.data.tags.values()]
    said = "".join(r.stdout + r.stderr for r in stack.said) + team_mlflow.log.read_text(errors="replace")
    for secret in team_mlflow.secrets():
        assert secret not in said and not any(secret in value for value in recorded)


def test_gate_refuses_a_weaker_candidate_names_the_figures_and_force_needs_a_reason(
    stack, no_failed_requests
):
    weaker = stack.versions["weaker"]
    refused = stack.cli("start", "--version", str(weaker))
    assert refused.returncode == 1, refused.stderr
    assert "accuracy" in refused.stderr and "threshold" in refused.stderr, refused.stderr
    assert aliases.alias_version(stack.name, "production") == 1
    assert aliases.alias_version(stack.name, "staging") is None
    # a refusal leaves a record (status and report show it), and the server never saw the candidate
    refusal = stack.record()
    assert refusal.step == "refused" and refusal.candidate_version == weaker, refusal
    assert "accuracy" in refusal.log[-1]["failed"][0] and ("router", 1) not in stack.ensemble_steps()
    status = json.loads(stack.cli("status").stdout)
    assert status["step"] == "refused" and "accuracy" in status["ended"]["failed"][0]

    corrupt = stack.cli("start", "--version", str(stack.versions["corrupt"]), "--force", "--reason", "x")
    assert corrupt.returncode == 1 and "did not load" in corrupt.stderr, corrupt.stderr[-2000:]
    assert stack.record().step == "refused" and aliases.alias_version(stack.name, "staging") is None
    assert stack.ensemble_steps()[1] == ("wrn_fp32", 1)

    no_reason = stack.cli("start", "--version", str(weaker), "--force")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr

    forced = stack.cli(
        "start",
        "--version",
        str(weaker),
        "--force",
        "--reason",
        "test: override",
        wait=False,
        params=stack.slow_params,
    )
    record = stack.wait_for(forced, lambda r: r.step == "shadow")
    assert record.step == "shadow" and record.forced_reason == "test: override"
    stack.wait_for(forced, lambda r: ("router", 1) in stack.ensemble_steps())  # recorded first, then served
    aborted = stack.cli("abort", "--reason", "test: enough")
    if aborted.returncode != 0:  # say what the controller did meanwhile
        forced.wait(60)
        pytest.fail(f"abort: {aborted.stderr[-1500:]}\ncontroller: {forced.stderr.read()[-3000:]}")
    assert ("router", 1) not in stack.ensemble_steps()
    assert forced.wait(60) == 1, forced.stderr.read()
    assert "ended or taken over" in forced.stderr.read()
    assert stack.record().step == "aborted" and aliases.alias_version(stack.name, "production") == 1


def assert_release_panels_show_the_candidate(stack: ReleaseStack, candidate: int) -> None:
    """Every Grafana panel for releases returns a series of the candidate version (live queries)."""
    from monitoring import dashboard
    from tests.monitoring.test_rules import live_expr

    panels = json.loads((ROOT / "monitoring/grafana/dashboards/cifar10-triton.json").read_text())
    release = [(t, e) for t, e in dashboard.expressions(panels) if t.startswith("Release:")]
    assert len(release) >= 4
    for title, expr in release:
        if "dropped" in expr:
            continue  # counts only shadow copies the candidate could not take: none here, by design
        query = live_expr(expr, "30s")
        result = stack.prometheus.wait_for(
            query, lambda r: any(i["metric"].get("version") == str(candidate) for i in r), timeout=20
        )
        versions = {item["metric"].get("version") for item in result}
        assert str(candidate) in versions, f"panel {title!r}: no series of v{candidate}: {result}"


def test_route_key_is_sticky_and_metrics_split_by_version(stack, no_failed_requests):
    """At canary 50 %, one key always gets one version's answer (gRPC parameter or HTTP header);
    Triton's metrics, the class counter and the release panels split by version."""
    import tritonclient.http as httpclient

    from client.core.transport import image_batch

    rotated = stack.versions["rotated"]
    record = release_record.ReleaseRecord(
        candidate_name=stack.name,
        candidate_version=rotated,
        production_name=stack.name,
        production_version=1,
        step="canary",
        step_index=1,
        canary_weight=0.5,
        started_at=time.time(),
    ).moved("canary", step_index=1, canary_weight=0.5, shadow_fraction=0.5)  # both at once, for the panels
    release_record.write(record)
    sync(stack.params, stack.repo, stack.cache, stack.server.url_grpc, stack.header)
    grpc = grpcclient.InferenceServerClient(stack.server.url_grpc)
    http = httpclient.InferenceServerClient(stack.server.http_endpoint)
    image = image_batch([stack.images[0]])
    answers: dict[str, set] = {}
    for key in [f"user-{k}" for k in range(16)]:
        for attempt in range(4):
            if attempt % 2:
                inp = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
                inp.set_data_from_numpy(image, binary_data=True)
                out = http.infer("cifar10", [inp], headers={"route-key": key}).as_numpy("PROBABILITIES")
            else:
                inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
                inp.set_data_from_numpy(image)
                out = grpc.infer("cifar10", [inp], parameters={"route-key": key}).as_numpy("PROBABILITIES")
            answers.setdefault(key, set()).add(int(out.argmax()))
    from tritonclient.utils import InferenceServerException

    corrupt = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    corrupt.set_data_from_numpy(image_batch([b"\x89PNG not really"]))
    with pytest.raises(InferenceServerException, match="image 0 of the request is not a PNG or JPEG"):
        grpc.infer("cifar10", [corrupt], parameters={"route-key": "user-1"})  # decoded by the router
    grpc.close()
    http.close()
    assert all(len(classes) == 1 for classes in answers.values()), answers
    assert len({next(iter(c)) for c in answers.values()}) == 2, "a 50 % canary routed every key one way"
    with urllib.request.urlopen(stack.server.url_metrics, timeout=10) as resp:
        text = resp.read().decode()
    for version in (1, rotated):  # the served class mix and Triton's own counters, per version
        for metric in ("predicted_class_total", "nv_inference_count"):
            assert any(
                line.startswith(metric + "{")
                and 'model="wrn_fp32"' in line
                and f'version="{version}"' in line
                and float(line.rsplit(" ", 1)[1]) > 0
                for line in text.splitlines()
            ), f"no {metric} for version {version}"
    assert_release_panels_show_the_candidate(stack, rotated)
    release_record.write(record.moved("aborted"))
    sync(stack.params, stack.repo, stack.cache, stack.server.url_grpc, stack.header)
    assert ("router", 1) not in stack.ensemble_steps()


@pytest.mark.full  # 20-minute budget: the fleet's label swap is rolled back at shadow too
def test_bad_candidate_is_rolled_back_at_shadow_and_production_is_unchanged(stack, no_failed_requests):
    t0, sent = time.monotonic(), stack.load.ok
    bad = stack.cli("start", "--version", str(stack.versions["rotated"]))
    elapsed = time.monotonic() - t0
    assert bad.returncode == 1, bad.stderr
    assert "step shadow: breach" in bad.stderr and "shadow_agreement" in bad.stderr, bad.stderr
    assert aliases.alias_version(stack.name, "production") == 1
    assert aliases.alias_version(stack.name, "staging") is None
    assert stack.ensemble_steps()[1] == ("wrn_fp32", 1)
    record = stack.record()
    assert record.step == "rolled_back" and [e["label"] for e in record.log][-2:] == ["shadow", "rolled_back"]
    print(
        f"bad release: rolled back {elapsed:.1f} s after start, {stack.load.ok - sent} requests answered "
        f"meanwhile; {bad.stderr.strip().splitlines()[-1]}"
    )


DOWN_S = 4.0  # the registry's database is down this long: several of the controller's checks (1 s)


def test_good_candidate_survives_a_database_restart_resumes_after_a_kill_and_reaches_production(
    stack, team_mlflow, no_failed_requests, tmp_path
):
    """A good release meets two faults: the registry's PostgreSQL down 5 s in its shadow step (the
    controller rides it out, or dies of it), then the controller SIGKILLed in its first canary step.
    A second ``start`` resumes from the registry's record, and the release ends promoted."""
    good = stack.versions["good"]
    t0, sent = time.monotonic(), stack.load.ok
    first = stack.cli("start", "--version", str(good), wait=False)
    stack.wait_for(first, lambda r: r.step == "shadow" and r.candidate_version == good)
    down_at = time.monotonic()
    team_mlflow.pg.restart(down_s=DOWN_S)
    down_s = time.monotonic() - down_at
    deadline = time.monotonic() + 120
    # Killed as soon as the record says canary: its rollout may be half done (the repository written,
    # the router not yet loaded), which the resumed rollout must finish from what the server serves.
    while first.poll() is None and time.monotonic() < deadline:
        if (record := stack.record()) is not None and record.step == "canary":
            break
        time.sleep(0.3)
    rode_it_out = first.poll() is None
    assert rode_it_out, first.communicate()[1][-3000:]  # MLflow's client retries what the outage failed
    killed_at = time.time()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed = stack.record()
    assert killed.active and killed.owner.pid == first.pid and not killed.owner.alive(60)
    status = json.loads(stack.cli("status").stdout)
    assert status["step"] == "canary 50%" and status["owner"]["alive"] is False

    resumed_at = time.time()
    second = stack.cli("start", "--version", str(good))
    total = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stderr
    assert aliases.alias_version(stack.name, "production") == good
    assert stack.ensemble_steps() == [("preprocess", 1), ("wrn_fp32", good), ("postprocess", 1)]
    record = stack.record()
    labels = [e["label"] for e in record.log]
    assert labels == ["gate", "shadow", "canary 50%", "canary 100%", "promoted"], labels
    # the interrupted step was judged on a whole window after the resume, not on what was left of it
    assert record.log[3]["at"] - resumed_at >= RELEASE.canary_window_s, (resumed_at, record.log)
    # MLflow: the release's run, finished, with a nested run per judged step (figures and decision)
    c = store.client()
    assert c.get_run(record.run_id).info.status == "FINISHED"
    assert c.get_run(record.run_id).data.tags["release.outcome"] == "promoted"
    steps = c.search_runs(
        [c.get_run(record.run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{record.run_id}'"
    )
    decided = sorted((r.data.tags["release.step"], r.data.tags["release.decision"]) for r in steps)
    assert decided == [
        ("canary 100%", "passed"),
        ("canary 50%", "passed"),
        ("gate", "passed"),
        ("shadow", "passed"),
    ], decided
    shadow = next(r for r in steps if r.data.tags["release.step"] == "shadow")
    assert shadow.data.metrics["shadow_agreement"] == 1.0 and shadow.data.metrics["candidate_images"] >= 20
    # the labelled probe: both versions answered the 20 prepared test images alike (the same network)
    assert shadow.data.metrics["probe_accuracy_difference"] == 0.0

    report = stack.cli("report", "--out", str(tmp_path))
    assert report.returncode == 0, report.stderr
    rows = json.loads((tmp_path / "release_report.json").read_text())["versions"]
    assert [r["version"] for r in rows] == [1, good]
    assert rows[1]["served_images"] > 0 and rows[1]["shadow_agreement"] == 1.0
    assert (tmp_path / "release_report.png").stat().st_size > 10_000
    gap = killed_at - record.log[2]["at"]
    print(
        f"good release: start to production {total:.1f} s, including PostgreSQL down {down_s:.1f} s in "
        f"shadow ({'ridden out' if rode_it_out else 'the controller died of it'}), the kill and a restart "
        f"{gap:.1f} s into its first canary step; {stack.load.ok - sent} requests answered meanwhile"
    )


def test_a_label_swap_forced_past_the_gate_is_rolled_back_in_shadow_and_no_client_sees_it(
    stack, no_failed_requests
):
    """Two classes exchanged in the last layer: the gate refuses it, ``--force`` skips only that, and the
    per-class agreement rolls it back during shadow, where no client ever gets the candidate's answer."""
    import collections

    common = [c for c, _ in collections.Counter(stack.production_top1).most_common(2)]
    assert len(common) == 2, stack.production_top1
    a, b = common
    order = list(range(10))
    order[a], order[b] = b, a
    swapped = register_variant(
        stack.name, 1, onnx_variant(stack.export_fp32, stack.tmp / "swapped.onnx", order=order), -0.1
    )
    production = aliases.alias_version(stack.name, "production")
    t0 = time.time()
    refused = stack.cli("start", "--version", str(swapped))
    assert refused.returncode == 1 and "accuracy" in refused.stderr, refused.stderr[-2000:]
    forced = stack.cli("start", "--version", str(swapped), "--force", "--reason", "test: label swap")
    assert forced.returncode == 1, forced.stderr[-3000:]
    assert "step shadow: breach" in forced.stderr, forced.stderr[-3000:]
    assert "class_agreement." in forced.stderr, forced.stderr[-3000:]
    assert aliases.alias_version(stack.name, "production") == production
    record = stack.record()
    assert record.step == "rolled_back" and record.forced_reason == "test: label swap"
    assert record.log[-1]["halted_s"] is not None and record.log[-1]["halted_s"] < 2.0, record.log[-1]
    swap = {a: b, b: a}
    seen = stack.answers_like(t0, lambda p: swap.get(p, -1))
    assert seen == [], f"clients got {len(seen)} swapped answers: {seen[:3]}"
    print(f"label swap {a}<->{b}: {forced.stderr.strip().splitlines()[-1]}")


def test_a_less_sure_candidate_is_rolled_back_though_it_answers_exactly_as_production(
    stack, no_failed_requests
):
    """Logits x 0.05: the same top-1 on every image (shadow agreement 100 %), but hardly any answer is
    above its ATC threshold any more: its label-free estimate on the shadowed images falls below
    production's on the same images, and the release rolls back in shadow."""
    timid = register_variant(
        stack.name, 1, onnx_variant(stack.export_fp32, stack.tmp / "timid.onnx", scale=0.05)
    )
    before = aliases.alias_version(stack.name, "production")
    result = stack.cli("start", "--version", str(timid))
    assert result.returncode == 1, result.stderr
    assert "step shadow: breach" in result.stderr and "estimated_accuracy" in result.stderr, result.stderr
    assert "shadow_agreement" not in result.stderr.split("breach", 1)[1].splitlines()[0], result.stderr
    assert aliases.alias_version(stack.name, "production") == before
    assert stack.record().step == "rolled_back"


def test_a_candidate_that_fails_some_requests_is_rolled_back_and_clients_never_see_a_failure(
    stack, no_failed_requests
):
    from PIL import Image

    from common.params import DataConfig

    data = DataConfig()
    means = []
    for raw in stack.images:  # each image's mean model input, as the server normalises it
        pixels = np.asarray(Image.open(__import__("io").BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255
        means.append(float(((pixels - np.array(data.mean)) / np.array(data.std)).mean()))
    # about 30 % of the images fail, whatever the synthetic tints: the tail farther from 0, so that the
    # zero warm-up samples and the gate's check (mean near 0) pass
    high, low = np.percentile(means, 70), np.percentile(means, 30)
    threshold = float(high if abs(high) >= abs(low) else low)
    assert abs(threshold) > 0.1 and sum(m * threshold > threshold**2 for m in means) >= 4, means
    failing = register_variant(
        stack.name, 1, onnx_variant(stack.export_fp32, stack.tmp / "failing.onnx", fail_beyond=threshold)
    )
    production = aliases.alias_version(stack.name, "production")
    released = stack.cli("start", "--version", str(failing))
    assert released.returncode == 1, released.stderr[-3000:]
    # whichever figure is sure first: the failures themselves, or the class mix of what did answer
    # (the failing inputs are some tints, so some classes)
    assert "step shadow: breach" in released.stderr, released.stderr[-3000:]
    assert "error_ratio" in released.stderr or "class_psi" in released.stderr, released.stderr[-3000:]
    failed = stack.prometheus.query(
        f'sum(max_over_time(release_route_failure_total{{model="wrn_fp32",version="{failing}"}}[5m]))'
    )
    failures = [float(item["value"][1]) for item in failed]
    assert sum(failures) > 0, "the candidate never failed: the test's variant does not do its job"
    assert stack.record().step == "rolled_back"
    assert aliases.alias_version(stack.name, "production") == production


@pytest.mark.full  # 20-minute budget: tests/registry/test_release_claim.py races the election
def test_concurrent_starts_elect_one_driver_and_the_others_exit_2(stack, no_failed_requests):
    good = register_variant(stack.name, 1, onnx_variant(stack.export_fp32, stack.tmp / "good-again.onnx"))
    starts = [
        stack.cli("start", "--version", str(good), wait=False, params=stack.slow_params) for _ in range(3)
    ]
    deadline = time.monotonic() + 120
    while sum(p.poll() is None for p in starts) > 1 and time.monotonic() < deadline:
        time.sleep(0.3)
    running = [p for p in starts if p.poll() is None]
    ended = [p for p in starts if p.poll() is not None]
    try:
        assert len(running) == 1, [(p.returncode, p.stderr.read()[-600:]) for p in ended]
        for p in ended:
            err = p.stderr.read()
            assert p.returncode == 9 and ("claimed" in err or "driven by" in err), err[-1500:]  # busy (was 2)
        record = stack.wait_for(running[0], lambda r: r.step in ("gate", "shadow"))
        assert record.owner.pid == running[0].pid
    finally:
        aborted = stack.cli("abort", "--reason", "test: concurrent starts")
        assert aborted.returncode == 0, aborted.stderr[-1500:]
        for p in running:
            assert p.wait(60) == 1


def test_an_abort_at_canary_stops_the_candidates_answers_within_two_seconds(stack, no_failed_requests):
    """A rotated candidate at canary 50 % (its answers are recognisable): after the abort's halt, no
    request sent later is answered by it; the time to its last answer is printed."""
    rotated = stack.versions["rotated"]
    record = release_record.ReleaseRecord(
        candidate_name=stack.name,
        candidate_version=rotated,
        production_name=stack.name,
        production_version=aliases.alias_version(stack.name, "production"),
        step="canary",
        started_at=time.time(),
    ).moved("canary", step_index=1, canary_weight=0.5)
    release_record.write(record)
    sync(stack.params, stack.repo, stack.cache, stack.server.url_grpc, stack.header)
    since = time.time()
    rotated_answer = lambda p: (p - 1) % 10  # noqa: E731 - logits rolled by one class
    deadline = time.monotonic() + 30
    while not stack.answers_like(since, rotated_answer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.answers_like(since, rotated_answer), "the canary never answered"
    aborted = stack.cli("abort", "--reason", "test: halt")
    assert aborted.returncode == 0, aborted.stderr[-1500:]
    halted_at = stack.record().log[-1]["halted_at"]
    time.sleep(1.0)
    last = max(a[1] for a in stack.answers_like(since, rotated_answer))
    late = [a for a in stack.answers_like(halted_at, rotated_answer)]
    assert late == [], f"{len(late)} requests sent after the halt got the candidate's answer"
    assert last - halted_at < 2.0
    assert ("router", 1) not in stack.ensemble_steps()
    print(f"abort at canary 50 %: last candidate answer {last - halted_at:+.3f} s after the halt")


@pytest.mark.full  # 20-minute budget: `make test-full` runs it
def test_a_version_of_another_form_is_released_and_then_served_by_the_ensemble(stack, no_failed_requests):
    """int8 v1 (never served) against fp32 production: judged the same way, then the ensemble follows it."""
    from registry import serving_choice

    # The small model's near-ties flip under int8 in runs of one image (40 distinct images in the
    # traffic), which moves its class mix; this test is about routing and promotion across forms.
    # int8 kernels differ between CPUs (AVX2, AVX-512/VNNI), so how many near-ties flip does too.
    short = RELEASE.replace(
        shadow_window_s=3,
        canary_weights=(1.0,),
        canary_window_s=3,
        max_psi=2.0,
        min_agreement=0.5,
        min_class_agreement=0.0,  # a near-tie model: per class, int8 may flip half of a class's images
        probe_images=0,  # likewise on the 20 labelled images: how many flip depends on the CPU's int8 kernels
    )
    fast = stack.write_params(stack.tmp / "params-fast.yaml", short)
    int8 = stack.cfg.registered_name("int8")
    assert aliases.alias_version(int8, "production") is None
    released = stack.cli("start", "--version", "1", "--precision", "int8", params=fast)
    assert released.returncode == 0, released.stderr[-3000:]
    assert aliases.alias_version(int8, "production") == 1
    choice = serving_choice.read(stack.cfg, ("fp32", "int8"))
    assert (choice.precision, choice.version, choice.decided_by) == ("int8", 1, "cifar10-release")
    assert stack.ensemble_steps() == [("preprocess", 1), ("wrn_int8", 1), ("postprocess", 1)]
    record = stack.record()
    assert (record.candidate_name, record.production_name, record.step) == (int8, stack.name, "promoted")
