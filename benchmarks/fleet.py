"""A fleet measured through its balancer, one replica against two, in one run; printed as JSON::

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python -m benchmarks.fleet \
        --export-dir artifacts/export --images data/prepared/test_images --out reports/fleet.json

For one replica and then two (embedded tritonservers on one S3 repository, ``rclone serve s3``, behind
Debian's haproxy as ``scripts.local_balancer`` configures it), while 4 clients call ``cifar10``
through the balancer:

* ``throughput``: answers per second over a steady window, and p99;
* ``promote`` / ``rollback``: the time of ``registry sync --fleet`` (each replica drained in turn),
  failed requests, and the requests haproxy retried or redispatched meanwhile;
* ``kill`` (two replicas): one replica SIGKILLed under load: failed and retried requests, and the
  seconds until it is restarted and UP in the balancer again.

Nothing is asserted; the servers are real and started here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.shared_stores import Load, _register
from scripts import local_stores
from scripts.local_balancer import haproxy

WINDOW_S = 15.0


def _retries(lb) -> dict[str, int]:
    from serving.fleet.haproxy import Haproxy

    rows = [r for r in Haproxy(lb.admin).stats() if r["svname"] == "BACKEND"]
    return {
        "retried": sum(int(r["wretr"] or 0) for r in rows),
        "redispatched": sum(int(r["wredis"] or 0) for r in rows),
    }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def run(export_dir: Path, blobs: list[bytes], params_file: Path, s3, work: Path, replicas: int) -> dict:
    from common.params import Params, load_params
    from common.params_schema import FleetConfig
    from registry import aliases
    from registry.sync import sync
    from serving.fleet.haproxy import Haproxy
    from serving.server.embedded import EmbeddedServer, private_config

    serving = load_params(params_file).serving
    cfg, name, v2 = _register(export_dir, f"fleet{uuid.uuid4().hex[:6]}", ("fp32",))
    repository = f"s3://127.0.0.1:{s3.port}/{s3.bucket('fleet' + uuid.uuid4().hex[:6])}/cifar10"
    cache = work / f"cache-{replicas}"
    sync(Params(profile="bench", registry=cfg, serving=serving), repository, cache)
    first = private_config(repository, work / f"r1-{replicas}", ort_threads=1)
    configs = [first] + [
        private_config(
            repository,
            work / f"r{i + 1}-{replicas}",
            ort_threads=1,
            restricted_header=first.restricted_header,
        )
        for i in range(1, replicas)
    ]
    servers = [EmbeddedServer(c).start() for c in configs]
    out: dict = {"replicas": replicas}
    try:
        for server in servers:
            server.wait_ready(600)
        members = [
            (f"r{i + 1}", f"127.0.0.1:{c.grpc_port}", f"127.0.0.1:{c.http_port}")
            for i, c in enumerate(configs)
        ]
        with haproxy(members, work / f"haproxy-{replicas}") as lb:
            fleet = FleetConfig(
                replicas=[{"name": n, "grpc": g, "http": h} for n, g, h in members],
                balancer=lb.grpc, balancer_admin=lb.admin, drain_timeout_s=30.0,
            )  # fmt: skip
            params = Params(profile="bench", registry=cfg, serving=serving, fleet=fleet)
            header = first.restricted_header
            while not all(Haproxy(lb.admin).up(n) for n, _, _ in members):
                time.sleep(0.2)
            load = Load(lb.grpc, blobs)
            try:
                time.sleep(5)  # warm-up
                t0 = time.time()
                time.sleep(WINDOW_S)
                steady = load.window(t0, time.time())
                out["throughput"] = {"img_per_s": round(steady["requests"] / WINDOW_S, 1), **steady}
                for step in ("promote", "rollback"):
                    (aliases.promote(name, "production", v2) if step == "promote" else aliases.rollback(name))
                    retried, began = _retries(lb), time.time()
                    t = time.perf_counter()
                    sync(params, repository, cache, header=header, fleet=True)
                    seconds = time.perf_counter() - t
                    time.sleep(1)
                    out[step] = {"seconds": round(seconds, 1), **load.window(began, time.time()),
                                 **_delta(retried, _retries(lb))}  # fmt: skip
                    print(step, json.dumps(out[step]), flush=True)
                if replicas > 1:
                    retried, began = _retries(lb), time.time()
                    os.kill(servers[0].triton_pid, signal.SIGKILL)
                    time.sleep(3)
                    servers[0].stop(grace=5)
                    servers[0] = EmbeddedServer(configs[0]).start()
                    servers[0].wait_ready(600)
                    while not Haproxy(lb.admin).up("r1"):
                        time.sleep(0.2)
                    rejoined = time.time() - began
                    time.sleep(2)
                    out["kill"] = {"rejoined_s": round(rejoined, 1), **load.window(began, time.time()),
                                   **_delta(retried, _retries(lb))}  # fmt: skip
            finally:
                load.stop()
            out["failed_total"] = sum(not r[2] for r in load.done)
            out["requests_total"] = len(load.done)
    finally:
        for server in servers:
            server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, default=Path("reports/fleet.json"))
    args = p.parse_args()
    from client.core import images as img

    blobs = [item.read() for item in img.discover(args.images, limit=64, seed=0)]
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    results: dict = {"host_cpus": os.cpu_count()}
    with local_stores.s3(work) as s3:
        for name, value in s3.env().items():
            os.environ[name] = value
        for replicas in (1, 2):
            results[f"replicas_{replicas}"] = run(args.export_dir, blobs, args.params, s3, work, replicas)
            print(json.dumps(results[f"replicas_{replicas}"], indent=2), flush=True)
    one, two = results["replicas_1"]["throughput"], results["replicas_2"]["throughput"]
    results["two_over_one_throughput"] = round(two["img_per_s"] / one["img_per_s"], 2)
    results["two_over_one_rollout"] = round(
        results["replicas_2"]["promote"]["seconds"] / results["replicas_1"]["promote"]["seconds"], 2
    )
    print(json.dumps({k: results[k] for k in ("two_over_one_throughput", "two_over_one_rollout")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
