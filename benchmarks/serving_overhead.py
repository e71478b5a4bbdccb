"""What serving costs over in-process ONNX Runtime, for the old and the current settings, in one run.

``python -m benchmarks.serving_overhead --export-dir artifacts/export --images data/prepared/test_images``

Side by side on this host, same ONNX file (the manifest's fp32, or ``--precision``):

1. in-process ONNX Runtime with every core: batch-1 p50 latency, and the best throughput over
   ``--ort-batches``;
2. the public ``cifar10`` ensemble (encoded images in, gRPC) on a real ``tritonserver`` for each
   settings profile: p50 at concurrency 1 with one image per request, and saturated throughput at
   ``--concurrency`` with 1, 8 and 32 images per request.

Profiles: ``before`` is what this repository served before the fixed-cost work (queue delays
2000 µs on the classifier and 500 µs on the python steps, preferred sizes 8/32/64, latency summaries
on, ONNX Runtime threads spinning); ``current`` is ``params.yaml``'s serving section with the server's
defaults (summaries on, spinning on). ``current-summaries`` turns Triton's latency summaries off and
``current-spinning`` stops ONNX Runtime's threads spinning, to price each alone.

Prints, per profile, the batch-1 overhead (served p50 minus ONNX Runtime's) and the throughput ratio
(best served img/s over ONNX Runtime's best), and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import reference_stack


@dataclass(frozen=True)
class Profile:
    name: str
    classifier_delay_us: int
    python_delay_us: int
    preferred: tuple[int, ...]
    summary_latencies: bool
    ort_spinning: bool


def profiles(serving) -> list[Profile]:
    current = (serving.max_queue_delay_us, serving.python_queue_delay_us, serving.preferred_batch_sizes)
    return [
        Profile("before", 2000, 500, (8, 32, 64), True, True),
        Profile("current", *current, True, True),
        Profile("current-summaries", *current, False, True),
        Profile("current-spinning", *current, True, False),
    ]


def ort_batch1_p50(sess, x: np.ndarray, seconds: float) -> float:
    lat, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        sess.run(["logits"], {"input": x[len(lat) % len(x)][None]})
        lat.append((time.perf_counter() - t0) * 1000)
    return round(float(np.percentile(lat, 50)), 3)


def ort_figures(sess, x: np.ndarray, batches: tuple[int, ...], seconds: float) -> dict:
    best = {}
    for batch in batches:
        xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
        sess.run(["logits"], {"input": xb})
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            sess.run(["logits"], {"input": xb})
            n += batch
        best[batch] = round(n / (time.perf_counter() - start), 2)
    return {
        "throughput_img_s": best,
        "best_img_s": max(best.values()),
        "batch1_p50_ms": ort_batch1_p50(sess, x, seconds),
    }


def _load(grpc_url: str, blobs: list[bytes], per_request: int, concurrency: int, seconds: float) -> dict:
    from client.tools.load_bench import measure_images

    return asyncio.run(measure_images(grpc_url, "cifar10", blobs, per_request, concurrency, seconds))


def served_figures(spec, profile: Profile, blobs: list[bytes], args, paired=None) -> dict:
    """``paired``: a callable giving in-process ONNX Runtime's batch-1 p50 now; with ``--paired-rounds``
    the two are measured alternately, so drift of the machine between them cancels out."""
    import dataclasses

    from serving.repository.build import build_repository
    from serving.server.embedded import EmbeddedServer, private_config

    model = dataclasses.replace(
        spec.classifiers[0],
        preferred_batch_sizes=profile.preferred,
        max_queue_delay_us=profile.classifier_delay_us,
    )
    spec = dataclasses.replace(spec, classifiers=(model,), python_queue_delay_us=profile.python_delay_us)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        build_repository(spec, Path(tmp) / "repo")
        config = private_config(
            Path(tmp) / "repo",
            Path(tmp),
            summary_latencies=profile.summary_latencies,
            ort_spinning=profile.ort_spinning,
        )
        with EmbeddedServer(config) as server:
            server.wait_ready(300)
            c1 = _load(server.url_grpc, blobs, 1, 1, args.seconds)
            diffs = []
            for _ in range(args.paired_rounds if paired else 0):
                ort_p50 = paired(args.seconds / 2)
                served = (_load(server.url_grpc, blobs, 1, 1, args.seconds / 2))["p50_ms"]
                diffs.append(served - ort_p50)
            rows = [(_load(server.url_grpc, blobs, n, args.concurrency, args.seconds)) for n in (1, 8, 32)]
    out = {"concurrency1": c1, "saturated": rows, "best_img_s": max(r["throughput_img_s"] for r in rows)}
    if diffs:
        out["paired_overhead_ms"] = {
            "median": round(float(np.median(diffs)), 3),
            "min": round(min(diffs), 3),
            "max": round(max(diffs), 3),
            "rounds": len(diffs),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--precision", default="fp32")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--seconds", type=float, default=8.0, help="measured time per figure")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight when saturated")
    p.add_argument("--ort-batches", default="8,32,64")
    p.add_argument(
        "--paired-rounds",
        type=int,
        default=6,
        help="alternate in-process and served batch-1 p50 this many times per profile (0: off)",
    )
    p.add_argument("--profiles", default="before,current,current-summaries,current-spinning")
    p.add_argument("--out", type=Path, default=Path("reports/bench_serving_overhead.json"))
    args = p.parse_args()
    from client.core import images as img
    from common.params import load_params
    from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion

    params = load_params(args.params)
    ref = reference_stack.load(args, args.precision)
    manifest, onnx, blobs = ref.manifest, ref.onnx, ref.blobs
    mean, std = tuple(manifest["mean"]), tuple(manifest["std"])
    x = np.stack([img.to_tensor(b, mean, std) for b in blobs])
    from export import onnx_io

    sess = onnx_io.session(onnx, os.cpu_count())
    ort = ort_figures(sess, x, tuple(int(b) for b in args.ort_batches.split(",")), args.seconds)
    print(f"onnxruntime in-process ({args.precision}): {json.dumps(ort)}", flush=True)
    spec = RepositorySpec(
        classifiers=(
            ServedModel(
                f"wrn_{args.precision}",
                "onnxruntime",
                (ServedVersion(1, onnx),),
                1,
                max_batch_size=manifest["io"]["max_batch"],
            ),
        ),
        ensemble_target=f"wrn_{args.precision}",
        classes=tuple(manifest["classes"]),
        mean=mean,
        std=std,
        preprocess_max_batch=params.serving.preprocess_max_batch,
        postprocess_max_batch=params.serving.postprocess_max_batch,
    )
    wanted = args.profiles.split(",")
    result = {"onnxruntime": ort, "profiles": {}}
    for profile in (p for p in profiles(params.serving) if p.name in wanted):
        served = served_figures(spec, profile, blobs, args, lambda s: ort_batch1_p50(sess, x, s))
        served["batch1_overhead_ms"] = round(served["concurrency1"]["p50_ms"] - ort["batch1_p50_ms"], 3)
        served["throughput_ratio"] = round(served["best_img_s"] / ort["best_img_s"], 3)
        served["settings"] = profile.__dict__
        result["profiles"][profile.name] = served
        per_request = ", ".join(
            f"{r['images_per_request']}/req {r['throughput_img_s']:.1f} img/s" for r in served["saturated"]
        )
        print(
            f"{profile.name:18s} c=1 p50 {served['concurrency1']['p50_ms']:.2f} ms "
            f"(overhead {served['batch1_overhead_ms']:+.2f} ms) | {per_request} | "
            f"ratio {served['throughput_ratio']:.3f}"
            + (
                f" | paired overhead {served['paired_overhead_ms']}" if "paired_overhead_ms" in served else ""
            ),
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
