"""The shared stores, measured side by side in one run; each part printed as JSON::

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python -m benchmarks.shared_stores \
        --export-dir artifacts/export --images data/prepared/test_images --prepared data/prepared \
        --out reports/shared_stores.json

* ``rollout``: promote then rollback (``sync --server``) of the export's fp32 form while 4 clients
  keep calling the ``cifar10`` ensemble, with the repository in a folder and in S3 (``rclone serve
  s3`` here): failed requests, each rollout's time, and p99 while the rollouts ran against p99 before.
* ``publish``: ``sync`` of the fp32 + int8 forms into an empty S3 prefix (every object uploaded and
  read back), then again with nothing changed.
* ``trials``: trials per minute of one tiny study (WRN-10-1, a few hundred images, 2 epochs per
  trial) with one ``cifar10 tune run`` worker and with two, on PostgreSQL.

The servers are real and started here (``scripts.local_stores``); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from scripts import local_stores

CONCURRENCY = 4


class Load:
    """``CONCURRENCY`` clients calling ``cifar10`` with one image each, every request timed."""

    def __init__(self, grpc_url: str, blobs: list[bytes]) -> None:
        self.url, self.blobs = grpc_url, blobs
        self.done: list[tuple[float, float, bool]] = []  # (sent, latency_s, ok)
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(CONCURRENCY)
        ]
        for t in self.threads:
            t.start()

    def _run(self, seed: int) -> None:
        import tritonclient.grpc as grpcclient

        from client.core.transport import image_batch

        client = grpcclient.InferenceServerClient(self.url)
        i = seed
        while not self._stop.is_set():
            inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(image_batch([self.blobs[i % len(self.blobs)]]))
            sent = time.time()
            try:
                client.infer("cifar10", [inp], client_timeout=60)
                self.done.append((sent, time.time() - sent, True))
            except Exception:
                self.done.append((sent, time.time() - sent, False))
            i += CONCURRENCY
        client.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(90)

    def window(self, start: float, end: float) -> dict:
        rows = [r for r in self.done if start <= r[0] < end]
        latencies = [r[1] * 1000 for r in rows if r[2]]
        return {
            "requests": len(rows),
            "failed": sum(not r[2] for r in rows),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
        }


def _register(export_dir: Path, prefix: str, forms: tuple[str, ...]):
    from benchmarks.onnx_variants import register_variant
    from common.params import RegistryConfig
    from registry import aliases, store

    cfg = RegistryConfig(model_prefix=prefix, serve=forms, ensemble_target="fp32")
    store.register_manifest(export_dir / "manifest.json", cfg)
    for form in forms:
        aliases.promote(cfg.registered_name(form), "production", 1)
    name = cfg.registered_name("fp32")
    copy = Path(tempfile.mkdtemp()) / "model.fp32.onnx"
    copy.write_bytes((export_dir / "model.fp32.onnx").read_bytes())
    return cfg, name, register_variant(name, 1, copy)


def rollout(export_dir: Path, blobs: list[bytes], params_file: Path, s3: local_stores.S3, work: Path) -> dict:
    from common.params import Params, load_params
    from registry import aliases
    from registry.sync import sync
    from serving.server.embedded import EmbeddedServer, private_config

    serving = load_params(params_file).serving
    results = {}
    for where in ("folder", "s3"):
        cfg, name, v2 = _register(export_dir, f"bench{uuid.uuid4().hex[:6]}", ("fp32",))
        params = Params(profile="bench", registry=cfg, serving=serving)
        cache = work / f"cache-{where}"
        if where == "s3":
            repository = f"s3://127.0.0.1:{s3.port}/{s3.bucket('rollout' + uuid.uuid4().hex[:6])}/cifar10"
        else:
            repository = str(work / "model_repository")
        sync(params, repository, cache)
        config = private_config(repository, work / where, ort_threads=1)
        server = EmbeddedServer(config).start().wait_ready(600)
        load = Load(server.url_grpc, blobs)
        try:
            time.sleep(10)
            began = time.time()
            aliases.promote(name, "production", v2)
            t0 = time.perf_counter()
            sync(params, repository, cache, server.url_grpc, config.restricted_header)
            promote_s = time.perf_counter() - t0
            aliases.rollback(name)
            t0 = time.perf_counter()
            sync(params, repository, cache, server.url_grpc, config.restricted_header)
            rollback_s = time.perf_counter() - t0
            ended = time.time()
            time.sleep(3)
        finally:
            load.stop()
            server.stop()
        results[where] = {
            "promote_s": round(promote_s, 1),
            "rollback_s": round(rollback_s, 1),
            "before": load.window(began - 10, began),
            "during_rollouts": load.window(began, ended),
            "failed_total": sum(not r[2] for r in load.done),
            "requests_total": len(load.done),
        }
        print(where, json.dumps(results[where]), flush=True)
    return results


def publish(export_dir: Path, params_file: Path, s3: local_stores.S3, work: Path) -> dict:
    from common.params import Params, load_params
    from registry.sync import sync

    cfg, _, _ = _register(export_dir, f"pub{uuid.uuid4().hex[:6]}", ("fp32", "int8"))
    params = Params(profile="bench", registry=cfg, serving=load_params(params_file).serving)
    repository = f"s3://127.0.0.1:{s3.port}/{s3.bucket('publish' + uuid.uuid4().hex[:6])}/cifar10"
    cache = work / "cache-publish"
    sync(params, work / "warm-cache-folder", cache)  # artifacts downloaded first: only the publish is timed
    t0 = time.perf_counter()
    sync(params, repository, cache)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sync(params, repository, cache)
    again = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in (s3.root).rglob("*") if p.is_file() and "publish" in str(p))
    return {"first_publish_s": round(first, 1), "unchanged_republish_s": round(again, 2), "bytes": size}


def trials(prepared: Path, pg: local_stores.Postgres, work: Path) -> dict:
    import optuna
    import yaml
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    out = {}
    for workers in (1, 2):
        storage = pg.create_database(f"optuna{workers}{uuid.uuid4().hex[:6]}")
        raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
        raw["profiles"]["cpu"]["model"] = {"depth": 10, "width": 1, "dropout": 0.0}
        raw["profiles"]["cpu"]["train"] |= {"batch_size": 64, "warmup_epochs": 0.0}
        raw["tune"] |= {"startup_trials": 50}  # no pruning: every trial costs the same
        raw["tune"]["profiles"]["cpu"] = {
            "trials": 8, "timeout_minutes": 30, "epochs": 2, "train_subset": 1000, "val_images": 500,
            "space": {"train.lr": {"low": 0.01, "high": 0.1, "log": True}, "model.width": {"choices": [1]}},
        }  # fmt: skip
        raw["stores"] |= {"optuna": storage}
        params = work / f"params-{workers}.yaml"
        params.write_text(yaml.safe_dump(raw))
        env = os.environ | pg.env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / f'mlflow-{workers}.db'}"}
        MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()  # created once, before the workers
        argv = [sys.executable, "-m", "commands", "tune", "--params", str(params), "--profile", "cpu", "run",
                "--data", str(prepared)]  # fmt: skip
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([*argv, "--out", str(work / f"tune-{workers}-{i}")], env=env, cwd=work, **quiet)
            for i in range(workers)
        ]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        os.environ["PGPASSWORD"] = pg.password
        try:
            study = optuna.get_all_study_summaries(storage)[0]
            done = [
                t
                for t in optuna.load_study(study_name=study.study_name, storage=storage).get_trials()
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            ]
        finally:
            os.environ.pop("PGPASSWORD")
        out[f"{workers}_worker{'s' if workers > 1 else ''}"] = {
            "exit_codes": codes,
            "finished_trials": len(done),
            "wall_s": round(wall, 1),
            "trials_per_min": round(len(done) / wall * 60, 2),
        }
        print(workers, json.dumps(out[f"{workers}_worker{'s' if workers > 1 else ''}"]), flush=True)
    out["ratio_2_to_1"] = round(out["2_workers"]["trials_per_min"] / out["1_worker"]["trials_per_min"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, default=Path("reports/shared_stores.json"))
    p.add_argument("--parts", default="rollout,publish,trials", help="comma-separated, in this order")
    args = p.parse_args()
    from client.core import images as img

    blobs = [item.read() for item in img.discover(args.images, limit=64, seed=0)]
    work = Path(tempfile.mkdtemp(prefix="shared-stores-"))
    results: dict = {"host_cpus": os.cpu_count()}
    with local_stores.s3(work) as s3, local_stores.postgres(work) as pg:
        for name, value in s3.env().items():
            os.environ[name] = value
        for part in args.parts.split(","):
            if part == "rollout":
                results["rollout"] = rollout(args.export_dir, blobs, args.params, s3, work)
            elif part == "publish":
                results["publish"] = publish(args.export_dir, args.params, s3, work)
            elif part == "trials":
                results["trials"] = trials(args.prepared, pg, work)
            print(json.dumps({part: results[part]}, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
