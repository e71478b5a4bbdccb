"""``cifar10 optimize`` end to end: it measures, chooses, records, and the live server follows.

A registry with fp32 and int8 in production, a live server synced from it (routing to fp32), and a
client sending images to that server throughout. The optimizer measures both forms on its own
private server, records its choice in the registry, and rolls the live server over through ``sync``:
the served configuration must then be the chosen one, with not one failed request.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from client.core.transport import image_batch
from commands.main import main as cifar10_main
from registry import aliases, serving_choice, store
from registry.sync import sync
from tests.conftest import add_version
from tests.e2e.test_registry_triton import Stack
from tests.serving.conftest import encode, random_image, triton_or_skip

pytestmark = [pytest.mark.triton, pytest.mark.slow]


@pytest.fixture
def stack(small_export, tmp_path):
    triton_or_skip()
    stack = Stack(*small_export, tmp_path / "stack", serve=("fp32",))
    aliases.promote(stack.cfg.registered_name("int8"), "production", 1)
    yield stack
    stack.close()


def write_params(stack: Stack, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "registry": {
                    "model_prefix": stack.cfg.model_prefix,
                    "serve": ["fp32"],
                    "ensemble_target": "fp32",
                },
                "serving": {"preferred_batch_sizes": [8, 32], "max_queue_delay_us": 1000},
                "optimize": {
                    "preferred_batch_sizes": [[], [4]],
                    "max_queue_delay_us": [0],
                    "instance_counts": [1],
                    "images_per_request": 4,
                    "concurrency": 2,
                    "seconds": 1.0,
                    "warmup_s": 0.3,
                    "p99_budget_ms": 60000.0,
                    "accuracy_margin": 0.99,  # both small forms qualify: the choice is by speed
                },
            }
        )
    )
    return path


class Traffic(threading.Thread):
    """One image per request to the live ensemble until stopped; counts answers and failures."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.stop, self.ok, self.failed = stack, threading.Event(), 0, []
        self.blob = encode(random_image(7), "PNG")

    def run(self) -> None:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
        inp.set_data_from_numpy(image_batch([self.blob]))
        while not self.stop.is_set():
            try:
                self.stack.grpc.infer("cifar10", [inp])
                self.ok += 1
            except Exception as exc:
                self.failed.append(str(exc))
            time.sleep(0.01)


def run_optimize(*argv: str) -> int:
    with pytest.raises(SystemExit) as exc:
        cifar10_main(["optimize", *argv])
    return exc.value.code


def test_optimize_chooses_records_and_the_live_server_follows(stack, tmp_path, monkeypatch, capsys):
    params = write_params(stack, tmp_path / "params.yaml")
    monkeypatch.setenv("CIFAR10_ADMIN_TOKEN", stack.header[1])
    traffic = Traffic(stack)
    traffic.start()
    try:
        code = run_optimize(
            "--params",
            str(params),
            "--cache",
            str(stack.cache),
            "--repository",
            str(stack.repo),
            "--server",
            stack.server.url_grpc,
            "--out",
            str(tmp_path / "report"),
            "--no-mlflow",
        )
        time.sleep(0.5)
    finally:
        traffic.stop.set()
        traffic.join(10)
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert traffic.failed == [] and traffic.ok > 20  # the rollout failed no request

    report = json.loads((tmp_path / "report" / "optimize.json").read_text())
    rows = report["rows"]
    assert {r["precision"] for r in rows} == {"fp32", "int8"} and len(rows) == 4
    assert all(r["errors"] == 0 and r["throughput_img_s"] > 0 for r in rows)
    best = max((r for r in rows if r["feasible"]), key=lambda r: r["throughput_img_s"])
    choice = report["choice"]
    assert choice["label"] == best["label"]
    assert (tmp_path / "report" / "optimize.png").stat().st_size > 0

    # Recorded on the chosen version in the registry...
    form = choice["precision"]
    recorded = serving_choice.read(stack.cfg, ("fp32", "int8"))
    assert recorded is not None and recorded.precision == form
    assert tuple(recorded.preferred_batch_sizes) == tuple(choice["preferred_batch_sizes"])
    # ...and served: the live ensemble routes to that form, batched as chosen.
    config = stack.http.get_model_config("cifar10")
    steps = {s["model_name"] for s in config["ensemble_scheduling"]["step"]}
    assert f"wrn_{form}" in steps
    served = stack.http.get_model_config(f"wrn_{form}")
    # Triton reports "no preferred size" as the model's max_batch_size.
    wanted = list(choice["preferred_batch_sizes"]) or [served["max_batch_size"]]
    assert [int(b) for b in served["dynamic_batching"]["preferred_batch_size"]] == wanted
    assert stack.http.is_model_ready("cifar10")

    # The ordinary sync path keeps it; a new fp32 production (not measured) makes it lapse.
    assert sync(stack.params, stack.repo, stack.cache).models.ensemble_target.form == form
    aliases.promote(stack.name, "production", add_version(stack.name))
    assert serving_choice.read(stack.cfg, ("fp32", "int8")) is None
    spec_target = sync(stack.params, stack.repo, stack.cache).models.ensemble_target
    assert spec_target.form == "fp32" and "params.yaml" in spec_target.decided_by


def test_clear_removes_the_choice(stack, tmp_path, monkeypatch):
    params = write_params(stack, tmp_path / "params.yaml")
    int8 = stack.cfg.registered_name("int8")
    choice = serving_choice.ServingChoice("int8", 1, (4,), 0, 1, 1, 10.0, 5.0, "2026-01-01T00:00:00+00:00")
    assert serving_choice.record(stack.cfg, ("fp32", "int8"), choice) == f"{int8} v1"
    assert serving_choice.read(stack.cfg, ("fp32", "int8")) == choice
    assert (
        run_optimize(
            "--params", str(params), "--cache", str(stack.cache), "--repository", str(stack.repo), "--clear"
        )
        == 0
    )
    assert serving_choice.read(stack.cfg, ("fp32", "int8")) is None
    assert "serving_choice" not in store.client().get_model_version(int8, "1").tags
    assert json.loads((stack.repo / ".spec.json").read_text())["ensemble_target"] == "wrn_fp32"
