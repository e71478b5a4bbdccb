"""The stack ``benchmarks.release_trials`` releases into: registry, server, Prometheus, labelled traffic.

The reference export is registered in the MLflow store it was logged to, under a fresh prefix (int8
serves, the fastest form on a CPU), the embedded ``tritonserver`` serves it, a Debian ``prometheus``
scrapes it every second, and every release is ``python -m commands release start`` in a subprocess with
shortened windows (:data:`RELEASE`), against continuous traffic of labelled test images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from benchmarks.release_trials import CLASSES, Load, last_candidate_answer, phases

ROOT = Path(__file__).resolve().parent.parent
# The trial settings: windows of a minute or less, judged every 5 s.
RELEASE = {
    "shadow_window_s": 60,
    "canary_weights": [0.5, 1.0],
    "canary_window_s": 30,
    "check_interval_s": 5,
    "min_images": 150,
    "latency_min_requests": 300,
}


def start_prometheus(metrics_port: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    from serving.server.embedded import free_ports

    port = free_ports(1)[0]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "triton", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


class TrialStack:
    def __init__(self, export_dir: Path, prepared: Path, out: Path, probe: bool = True) -> None:
        from common import scored_split
        from common.params import load_params
        from common.promql import Prometheus
        from registry import aliases, store
        from registry.sync import sync
        from serving.server.embedded import EmbeddedServer, private_config

        self.tmp = (out / f"work-{uuid.uuid4().hex[:6]}").resolve()
        self.tmp.mkdir(parents=True)
        # the store the export was logged to ($MLFLOW_TRACKING_URI, else the project's): its run has the files
        os.chdir(self.tmp)  # MLflow's artifacts, the repository and the cache stay in the work folder
        manifest = json.loads((export_dir / "manifest.json").read_text())
        prefix = f"trial{uuid.uuid4().hex[:6]}"
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["registry"] |= {"model_prefix": prefix, "serve": ["int8"], "ensemble_target": "int8"}
        raw["release"] |= RELEASE | ({} if probe else {"probe_images": 0})
        self.params_file = self.tmp / "params.yaml"
        self.params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.params = load_params(self.params_file)
        store.register_manifest(export_dir / "manifest.json", self.params.registry)
        self.name = self.params.registry.registered_name("int8")
        aliases.promote(self.name, "production", 1)
        art = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
        self.production_file = export_dir / art["file"]
        self.prepared = Path(prepared).resolve()  # the labelled probe's images too
        images, self.y = scored_split.load_rows(prepared, 1000)
        self.x = scored_split.normalise(images, manifest["mean"], manifest["std"])
        self.repo, self.cache = self.tmp / "model_repository", self.tmp / "cache"
        sync(self.params, self.repo, self.cache)
        config = private_config(self.repo, self.tmp)
        self.token_file = self.tmp / "admin-token"
        self.token_file.write_text(config.restricted_header[1])
        self.server = EmbeddedServer(config).start().wait_ready(600)
        self.prom_process, self.prom_url = start_prometheus(config.metrics_port, self.tmp)
        self.prometheus = Prometheus(self.prom_url)
        deadline = time.monotonic() + 60
        while not self.prometheus.ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        folder = prepared / "test_images"
        self.traffic = [
            (p.read_bytes(), CLASSES.index(p.parent.name))
            for c in CLASSES
            for p in sorted((folder / c).iterdir())[:60]
        ]

    def release(self, kind: str, version: int, threads: int, force: bool) -> dict:
        from registry import release_record

        load = Load(self.server.url_grpc, self.traffic, threads, pause_s=0.02)
        time.sleep(5)
        started = time.time()
        cmd = [
            sys.executable, "-m", "commands", "release", "--params", str(self.params_file),
            "--repository", str(self.repo), "--cache", str(self.cache), "--server", self.server.url_grpc,
            "--admin-token-file", str(self.token_file), "--prometheus", self.prom_url,
            "--prepared", str(self.prepared),
            "start", "--version", str(version), *(["--force", "--reason", f"trial: {kind}"] if force else []),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
        ended = time.time()
        time.sleep(5)
        load.stop()
        record = release_record.read(self.name)
        last = record.log[-1]
        verdict_at = last.get("verdict_at", last["at"])
        candidate_model = self.params.registry.triton_name("int8")
        return {
            "kind": kind,
            "version": version,
            "threads": threads,
            "exit": done.returncode,
            "outcome": record.step,
            "step": record.log[-2]["label"] if len(record.log) > 1 else "gate",
            "verdict_s": round(verdict_at - started, 1),
            "rollback_done_s": round(ended - verdict_at, 1),
            "halted_s": last.get("halted_s"),
            "last_candidate_answer_s": last_candidate_answer(
                self.prometheus, candidate_model, version, verdict_at
            ),
            "phases": phases(record, load.answers, ended + 5),
            "said": (done.stderr.strip().splitlines() or [""])[-1][:400],
        }

    def close(self) -> None:
        self.prom_process.terminate()
        self.server.stop(grace=20)
