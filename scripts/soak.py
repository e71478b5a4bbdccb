"""Soak: steady traffic through ``cifar10`` while production flips every minute and the server crashes once.

``python scripts/soak.py --export-dir artifacts/export --minutes 10 --rate 20``

Not a test (it takes as long as you ask): a script that exercises the whole control plane under
load, the way an operator's day would. In a private MLflow store it registers the export's fp32
artifact as two versions, serves version 1 from the embedded Triton, then for ``--minutes``:

* sends one encoded test image per request to the ``cifar10`` ensemble at ``--rate`` requests/s
  (open loop: the schedule does not wait for answers), each retried on transient errors with the
  client's own retry policy;
* every ``--switch-every`` seconds moves ``production`` (promote the other version, or roll back)
  and runs ``sync --server`` against the live server;
* once, at ``--kill-at`` of the run, SIGKILLs ``tritonserver`` and starts it again on the same
  ports and repository.

Reported: requests sent, answered, failed (after retries) and lost (never answered by the end),
first-attempt failures, and p50/p99 latency outside any switch, during rollouts and around the crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Request:
    started: float
    latency_s: float | None = None
    attempts: int = 0
    error: str | None = None  # final error after retries


@dataclass
class Window:
    kind: str  # rollout | crash
    start: float
    end: float | None = None
    detail: dict = field(default_factory=dict)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
    }


async def send_one(client, blob: bytes, record: Request, policy, rng) -> None:
    from client.core.transport import classify

    while True:
        record.attempts += 1
        try:
            await client.infer_bytes("cifar10", blob)
            record.latency_s = time.monotonic() - record.started
            return
        except Exception as exc:
            info = classify(exc)
            pause = policy.backoff(record.attempts, rng)
            if not info.transient or time.monotonic() + pause - record.started > policy.deadline_s:
                record.error = f"{info.kind}: {info.message[:120]}"
                return
            await asyncio.sleep(pause)


async def load(endpoint, blobs: list[bytes], rate: float, seconds: float, records: list[Request]) -> int:
    """Open loop at ``rate``/s for ``seconds``; returns how many requests were still open at the end."""
    import random

    from client.core.request_loop import RetryPolicy
    from client.core.transport import AsyncTriton

    policy, rng = RetryPolicy(deadline_s=60.0), random.Random(0)
    async with AsyncTriton(endpoint, conn_limit=64) as client:
        tasks, start = [], time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            record = Request(time.monotonic())
            records.append(record)
            tasks.append(asyncio.create_task(send_one(client, blobs[i % len(blobs)], record, policy, rng)))
        _, pending = await asyncio.wait(tasks, timeout=policy.deadline_s + 10) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        return len(pending)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=20.0, help="requests per second")
    p.add_argument("--switch-every", type=float, default=60.0, help="seconds between production moves")
    p.add_argument("--kill-at", type=float, default=0.55, help="fraction of the run at which to SIGKILL")
    p.add_argument("--protocol", choices=("http", "grpc"), default="grpc")
    p.add_argument("--out", type=Path, default=Path("reports/soak.json"))
    args = p.parse_args()

    from client.core.transport import Endpoint
    from common.params import Params, RegistryConfig
    from registry import aliases, store
    from registry.sync import sync
    from serving.server.embedded import ADMIN_HEADER, EmbeddedServer, ServerConfig, free_ports

    blobs = [f.read_bytes() for f in sorted(args.images.rglob("*.*"))[:200]]
    if not blobs:
        raise SystemExit(f"no images under {args.images}")
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    cfg = RegistryConfig(model_prefix=f"soak{uuid.uuid4().hex[:6]}", serve=("fp32",), ensemble_target="fp32")
    name = cfg.registered_name("fp32")
    import shutil

    import mlflow

    from common import tracking

    tracking.ensure_experiment("soak", root=work)
    mlflow.set_experiment("soak")
    with mlflow.start_run():  # the export's run lives in another store: log the artifact into this one
        manifest = json.loads((args.export_dir / "manifest.json").read_text())
        manifest["mlflow_run_id"] = mlflow.active_run().info.run_id
        fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32")
        mlflow.log_artifact(str(args.export_dir / fp32["file"]), "export/fp32")
        manifest["artifacts"] = [fp32]
    (work / "export").mkdir()
    shutil.copy(args.export_dir / fp32["file"], work / "export" / fp32["file"])
    (work / "export" / "manifest.json").write_text(json.dumps(manifest))
    store.register_manifest(work / "export" / "manifest.json", cfg)
    v1 = store.client().get_model_version(name, "1")
    store.client().create_model_version(name, v1.source, run_id=v1.run_id, tags=dict(v1.tags))
    aliases.promote(name, "production", 1)
    params, repo, cache = Params(profile="soak", registry=cfg), work / "model_repository", work / "cache"
    sync(params, repo, cache)

    http, grpc, metrics = free_ports(3)
    header = (ADMIN_HEADER, secrets.token_hex(8))
    config = ServerConfig(
        repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
        log_file=work / "triton.log", restricted_header=header, exit_timeout_s=5,
    )  # fmt: skip
    server = EmbeddedServer(config).start().wait_ready(300)
    endpoint = Endpoint(args.protocol, server.http_endpoint, server.url_grpc, request_timeout_s=30)
    seconds = args.minutes * 60
    records: list[Request] = []
    windows: list[Window] = []

    async def control(t0: float) -> None:
        nonlocal server
        kill_at, killed, n = t0 + args.kill_at * seconds, False, 0
        while time.monotonic() < t0 + seconds - 5:
            next_switch = t0 + (n + 1) * args.switch_every
            if not killed and kill_at < next_switch:
                await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
                window = Window("crash", time.monotonic())
                windows.append(window)
                os.kill(server.triton_pid, signal.SIGKILL)
                await asyncio.to_thread(server.process.wait)
                await asyncio.to_thread(server.stop)
                server = await asyncio.to_thread(lambda: EmbeddedServer(config).start().wait_ready(300))
                window.end, killed = time.monotonic(), True
                continue
            if next_switch > t0 + seconds - 5:
                break
            await asyncio.sleep(max(0.0, next_switch - time.monotonic()))
            n += 1
            window = Window("rollout", time.monotonic())
            windows.append(window)
            if n % 2:
                window.detail = aliases.promote(name, "production", 2)
            else:
                window.detail = aliases.rollback(name)
            out = await asyncio.to_thread(sync, params, repo, cache, server.url_grpc, header)
            window.end, window.detail["phases"] = time.monotonic(), out.phases

    async def run() -> int:
        t0 = time.monotonic()
        controller = asyncio.create_task(control(t0))
        lost = await load(endpoint, blobs, args.rate, seconds, records)
        await controller
        return lost

    try:
        lost = asyncio.run(run())
    finally:
        server.stop()

    def inside(r: Request, *kinds: str) -> bool:
        return any(w.kind in kinds and w.start - 1 <= r.started <= (w.end or w.start) + 1 for w in windows)

    answered = [r for r in records if r.latency_s is not None]
    report = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "requests": {
            "sent": len(records),
            "answered": len(answered),
            "failed": sum(r.error is not None for r in records),
            "lost": lost,
            "retried": sum(r.attempts > 1 for r in records),
            "first_attempt_failures": sum(r.attempts > 1 or r.error is not None for r in records),
        },
        "latency": {
            "steady": percentiles([r.latency_s for r in answered if not inside(r, "rollout", "crash")]),
            "during_rollouts": percentiles([r.latency_s for r in answered if inside(r, "rollout")]),
            "around_the_crash": percentiles([r.latency_s for r in answered if inside(r, "crash")]),
        },
        "windows": [
            {"kind": w.kind, "seconds": round((w.end or w.start) - w.start, 2), **w.detail} for w in windows
        ],
        "errors": sorted({r.error for r in records if r.error})[:10],
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("requests", "latency")}, indent=2))
    print(f"windows: {[(w['kind'], w['seconds']) for w in report['windows']]}; report: {args.out}")
    return 0 if report["requests"]["failed"] == 0 and lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
