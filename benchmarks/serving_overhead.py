"""What serving costs over in-process ONNX Runtime, for the old and the current settings, in one run.

``python -m benchmarks.serving_overhead --export-dir artifacts/export --images data/prepared/test_images``

Side by side on this host, same ONNX file (the manifest's fp32, or ``--precision``), for each
settings profile on a real ``tritonserver``:

1. **batch-1 overhead**: single-image requests through the public ``cifar10`` ensemble (encoded image
   in, gRPC, top-1 from the classification extension), one at a time, interleaved in short blocks
   with in-process ONNX Runtime batch-1 runs (:mod:`benchmarks.interleaved`), so the host's drift
   cancels. In-process ONNX Runtime runs twice: with spinning stopped after each run (``run``, the
   server's default), which is the floor fixed in advance, and with its default threads (``always``
   spinning), reported beside it. The overhead is the served median minus the floor's, with a 95 %
   interval over rounds. Tensors straight to the classifier are a fourth arm, to split gRPC from the
   python steps.
2. **throughput ratio**: saturated throughput through ``cifar10`` (``--concurrency`` requests in
   flight) with 1, 8 and 32 images per request, then the best of those alternated round by round
   with in-process ONNX Runtime at its best batch size; the ratio is the median of the per-round
   ratios.

Profiles: ``before`` is what this repository served before the fixed-cost work (queue delays
2000 µs on the classifier and 500 µs on the python steps, preferred sizes 8/32/64, latency summaries
on, ONNX Runtime threads spinning also between runs); ``current`` is ``params.yaml``'s serving section
with the server's defaults (summaries on, spinning only during a run). ``current-summaries`` turns
Triton's latency summaries off, ``spin-always`` lets ONNX Runtime's threads keep spinning after a run
(the server's default until ``run`` existed) and ``spin-off`` never spins, to price each alone. A
throughput round with failed requests stops the run: its img/s would not be a serving figure.

Prints, per profile, the batch-1 overhead and the throughput ratio, and writes the figures as JSON.
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

from benchmarks import interleaved, reference_stack


@dataclass(frozen=True)
class Profile:
    name: str
    classifier_delay_us: int
    python_delay_us: int
    preferred: tuple[int, ...]
    summary_latencies: bool
    ort_spinning: str


def profiles(serving) -> list[Profile]:
    current = (serving.max_queue_delay_us, serving.python_queue_delay_us, serving.preferred_batch_sizes)
    return [
        Profile("before", 2000, 500, (8, 32, 64), True, "always"),
        Profile("current", *current, True, "run"),
        Profile("current-summaries", *current, False, "run"),
        Profile("spin-always", *current, True, "always"),
        Profile("spin-off", *current, True, "off"),
    ]


def ort_throughput(sess, xb: np.ndarray, seconds: float) -> float:
    sess.run(["logits"], {"input": xb})
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(["logits"], {"input": xb})
        n += len(xb)
    return n / (time.perf_counter() - start)


def batch_of(x: np.ndarray, batch: int) -> np.ndarray:
    return np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))


def _load(grpc_url: str, blobs: list[bytes], per_request: int, concurrency: int, seconds: float) -> dict:
    from client.tools.load_bench import measure_images

    row = asyncio.run(measure_images(grpc_url, "cifar10", blobs, per_request, concurrency, seconds))
    if row["errors"]:
        raise SystemExit(f"{row['errors']} failed requests at {per_request} images per request: {row}")
    return row


class Floor:
    """In-process ONNX Runtime on the same file: the batch-1 and throughput floor of every profile."""

    def __init__(self, onnx: Path, x: np.ndarray, batches: tuple[int, ...], seconds: float) -> None:
        from export import onnx_io

        cores = os.cpu_count()
        self.x = x
        self.sessions = {
            "ort_always": onnx_io.session(onnx, cores),  # ONNX Runtime's defaults
            "ort_run": onnx_io.session(onnx, cores, onnx_io.SPIN_DURING_RUN_ONLY),
        }
        always = self.sessions["ort_always"]
        self.scan = {b: round(ort_throughput(always, batch_of(x, b), seconds), 2) for b in batches}
        self.best_batch = max(self.scan, key=self.scan.get)

    def arms(self) -> dict:
        x = self.x

        def call(sess):
            return lambda i: sess.run(["logits"], {"input": x[i % len(x)][None]})

        return {name: call(sess) for name, sess in self.sessions.items()}

    def throughput(self, seconds: float) -> float:
        return ort_throughput(self.sessions["ort_always"], batch_of(self.x, self.best_batch), seconds)


def served_arms(grpc_url: str, blobs: list[bytes], x: np.ndarray, classifier: str) -> dict:
    """One image through ``cifar10`` (top-1 from the classification extension); one tensor to the model."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url.removeprefix("grpc://"))

    def tensor(i: int) -> None:
        inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x[i % len(x)][None])
        client.infer(classifier, [inp])

    return {"served": reference_stack.single_image_calls(grpc_url, blobs)("cifar10"), "tensor": tensor}


def served_figures(spec, profile: Profile, blobs: list[bytes], floor: Floor, args) -> dict:
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
            url = server.url_grpc
            rows = [_load(url, blobs, n, args.concurrency, args.seconds) for n in (1, 8, 32)]
            best = max(rows, key=lambda r: r["throughput_img_s"])["images_per_request"]
            rounds = interleaved.throughput_rounds(
                {
                    "onnxruntime": lambda: floor.throughput(args.seconds),
                    "served": lambda: _load(url, blobs, best, args.concurrency, args.seconds)[
                        "throughput_img_s"
                    ],
                },
                args.throughput_rounds,
            )
            arms = floor.arms() | served_arms(url, blobs, floor.x, model.name)
            lat = interleaved.latency_blocks(arms, args.latency_rounds, args.block, args.discard)
    p50 = {name: round(float(np.median(v)), 3) for name, v in lat.items()}
    return {
        "saturated": rows,
        "best_images_per_request": best,
        "throughput_rounds": rounds,
        "throughput_ratio": interleaved.ratio_summary(rounds["served"], rounds["onnxruntime"]),
        "batch1_p50_ms": p50,
        "floor": "ort_run",
        "batch1_overhead": interleaved.p50_difference(lat["served"], lat["ort_run"]),
        "batch1_overhead_vs_ort_defaults": interleaved.p50_difference(lat["served"], lat["ort_always"]),
        "tensor_overhead": interleaved.p50_difference(lat["tensor"], lat["ort_run"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    reference_stack.add_arguments(p, "reports/bench_serving_overhead.json")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--seconds", type=float, default=6.0, help="measured time per throughput figure")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight when saturated")
    p.add_argument("--ort-batches", default="8,32,64")
    p.add_argument("--throughput-rounds", type=int, default=3, help="served/in-process alternations")
    p.add_argument("--latency-rounds", type=int, default=16, help="rounds of batch-1 blocks per profile")
    p.add_argument("--block", type=int, default=12, help="calls per arm and round")
    p.add_argument("--discard", type=int, default=2, help="first calls of each block not counted")
    p.add_argument("--profiles", default="before,current,current-summaries,spin-always,spin-off")
    args = p.parse_args()
    ref = reference_stack.load(args, args.precision)
    batches = tuple(int(b) for b in args.ort_batches.split(","))
    floor = Floor(ref.onnx, reference_stack.tensors(ref), batches, args.seconds)
    print(f"onnxruntime in-process ({args.precision}): img/s by batch {floor.scan}", flush=True)
    spec = reference_stack.spec(ref)
    wanted = args.profiles.split(",")
    result: dict = {"onnxruntime_img_s_by_batch": floor.scan, "profiles": {}}
    for profile in (pr for pr in profiles(ref.serving) if pr.name in wanted):
        served = served_figures(spec, profile, ref.blobs, floor, args)
        served["settings"] = profile.__dict__
        result["profiles"][profile.name] = served
        per_request = ", ".join(
            f"{r['images_per_request']}/req {r['throughput_img_s']:.1f}" for r in served["saturated"]
        )
        over, ratio = served["batch1_overhead"], served["throughput_ratio"]
        print(
            f"{profile.name:17s} batch-1 p50 {served['batch1_p50_ms']} | overhead {over['ms']:+.2f} ms "
            f"(95% {over['ci95_ms']}) | tensor {served['tensor_overhead']['ms']:+.2f} ms | "
            f"img/s {per_request} | "
            f"ratio {ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
