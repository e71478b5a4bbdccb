"""Triton end to end vs in-process ONNX Runtime, same model, same machine, one run.

``python -m benchmarks.triton_vs_onnxruntime --export-dir artifacts/export --images test_images/``

1. ONNX Runtime in this process: throughput at ``--ort-batch`` (its saturation) and batch-1
   latency percentiles.
2. The same ONNX file served by the embedded ``tritonserver`` (a repository built from the export
   manifest, version 1), driven by the client's load generator over HTTP and gRPC, tensors to the
   classifier and image bytes through the ``cifar10`` ensemble, at each ``--concurrency`` level.

Prints Triton's best throughput divided by ONNX Runtime's, and Triton's p50/p99 at concurrency 1
against ONNX Runtime's batch-1 latency. On a 2-core machine the server, its python backend stubs
and the load generator share the cores that ONNX Runtime had to itself, which the ratio includes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def ort_baseline(onnx_path: Path, x: np.ndarray, batch: int, seconds: float) -> dict:
    """Throughput at ``batch`` and batch-1 latency of an in-process session with every core."""
    from export import onnx_io

    sess = onnx_io.session(onnx_path, os.cpu_count())
    xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    sess.run(["logits"], {"input": xb})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(["logits"], {"input": xb})
        n += batch
    throughput = n / (time.perf_counter() - start)
    lat, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        sess.run(["logits"], {"input": x[len(lat) % len(x)][None]})
        lat.append((time.perf_counter() - t0) * 1000)
    return {
        "batch": batch,
        "throughput_img_s": round(throughput, 2),
        "batch1_latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 99)},
    }


def triton_sweep(
    export_dir: Path,
    images: Path | None,
    levels: tuple[int, ...],
    seconds: float,
    protocols: tuple[str, ...],
    modes: tuple[str, ...],
    x: np.ndarray,
    request_batch: int = 0,
) -> list[dict]:
    from client.tools.load_bench import BenchConfig, sweep
    from serving.repository.build import build_repository
    from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion
    from serving.server.embedded import EmbeddedServer, private_config

    manifest = json.loads((export_dir / "manifest.json").read_text())
    fp32 = next(a for a in manifest["artifacts"] if a["precision"] == "fp32" and a["passed"])
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        spec = RepositorySpec(
            classifiers=(
                ServedModel(
                    "wrn_fp32",
                    "onnxruntime",
                    (ServedVersion(1, export_dir / fp32["file"]),),
                    1,
                    max_batch_size=manifest["io"]["max_batch"],
                    preferred_batch_sizes=(8, 16, 32),
                ),
            ),
            ensemble_target="wrn_fp32",
            classes=tuple(manifest["classes"]),
            mean=tuple(manifest["mean"]),
            std=tuple(manifest["std"]),
        )
        build_repository(spec, Path(tmp) / "repo")
        config = private_config(Path(tmp) / "repo", Path(tmp))
        with EmbeddedServer(config) as server:
            cfg = BenchConfig(
                http_url=server.http_endpoint,
                grpc_url=server.url_grpc.removeprefix("grpc://"),
                protocols=protocols,
                modes=modes,
                concurrency=levels,
                duration_s=seconds,
                warmup_s=min(2.0, seconds / 2),
                images=images,
                classifier="wrn_fp32",
            )
            rows = asyncio.run(sweep(cfg, cfg.http_url, cfg.grpc_url, seconds, "triton"))
            if request_batch > 1:
                for level in levels:
                    rows.append(
                        asyncio.run(batched_tensor_level(cfg.grpc_url, x, request_batch, level, seconds))
                    )
            return rows


async def batched_tensor_level(
    grpc_url: str, x: np.ndarray, batch: int, concurrency: int, seconds: float
) -> dict:
    """Closed loop of ``concurrency`` gRPC clients, each request carrying ``batch`` images.

    What a batch client (offline scoring, a feature pipeline) sends; it shows how much of the
    per-image gap to in-process ONNX Runtime is per-request overhead rather than inference.
    """
    import tritonclient.grpc.aio as grpcaio
    from tritonclient.grpc import InferInput

    client = grpcaio.InferenceServerClient(grpc_url)
    xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    inp = InferInput("input", list(xb.shape), "FP32")
    inp.set_data_from_numpy(xb)
    lat: list[float] = []

    async def worker(stop: float, record: bool) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            await client.infer("wrn_fp32", [inp])
            if record:
                lat.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker(time.perf_counter() + 1.0, False) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    await client.close()
    return {
        "protocol": "grpc",
        "mode": f"tensor x{batch}/request",
        "concurrency": concurrency,
        "throughput_rps": round(len(lat) * batch / elapsed, 2),
        "errors": {},
        "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 99)},
    }


def report(ort: dict, rows: list[dict]) -> dict:
    best = max(rows, key=lambda r: r["throughput_rps"])
    c1 = [r for r in rows if r["concurrency"] == 1]
    return {
        "onnxruntime": ort,
        "triton": rows,
        "best": {k: best[k] for k in ("protocol", "mode", "concurrency", "throughput_rps")},
        "throughput_ratio_triton_over_ort": round(best["throughput_rps"] / ort["throughput_img_s"], 3),
        "concurrency1_latency_ms": {
            f"{r['protocol']}/{r['mode']}": {k: r["latency_ms"][k] for k in ("p50", "p99")} for r in c1
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--protocols", default="http,grpc")
    p.add_argument("--modes", default="tensor,bytes")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per level")
    p.add_argument("--ort-batch", type=int, default=64)
    p.add_argument(
        "--request-batch", type=int, default=16, help="images per request in the batched run (0: none)"
    )
    p.add_argument("--out", type=Path, default=Path("reports/bench_triton_vs_ort.json"))
    args = p.parse_args()
    from client.core.images import to_tensor  # the client's preprocessing, which matches the server's

    manifest = json.loads((args.export_dir / "manifest.json").read_text())
    fp32 = args.export_dir / next(a["file"] for a in manifest["artifacts"] if a["precision"] == "fp32")
    files = sorted(args.images.rglob("*.*"))[:64] if args.images.is_dir() else []
    mean, std = tuple(manifest["mean"]), tuple(manifest["std"])
    x = (
        np.stack([to_tensor(f.read_bytes(), mean, std) for f in files])
        if files
        else np.random.default_rng(0).normal(size=(64, 3, 32, 32)).astype(np.float32)
    )
    ort = ort_baseline(fp32, x, args.ort_batch, args.seconds)
    print("onnxruntime in-process:", json.dumps(ort), flush=True)
    rows = triton_sweep(
        args.export_dir,
        args.images if files else None,
        tuple(int(c) for c in args.concurrency.split(",")),
        args.seconds,
        tuple(args.protocols.split(",")),
        tuple(args.modes.split(",")),
        x,
        args.request_batch,
    )
    result = report(ort, rows)
    for r in rows:
        print(
            f"triton {r['protocol']:4s} {r['mode']:18s} c={r['concurrency']:3d}: "
            f"{r['throughput_rps']:8.1f} img/s  "
            f"p50 {r['latency_ms']['p50']} ms  p99 {r['latency_ms']['p99']} ms  errors {r['errors']}"
        )
    print(
        f"best Triton / in-process ONNX Runtime throughput: {result['throughput_ratio_triton_over_ort']} "
        f"({result['best']})"
    )
    print(
        f"ONNX Runtime batch-1 latency: {ort['batch1_latency_ms']}; Triton at concurrency 1: "
        f"{result['concurrency1_latency_ms']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
