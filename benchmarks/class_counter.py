"""What the served metrics cost: the same load, metrics on vs off, side by side.

``--switch class`` (default) measures the ``predicted_class_total`` counter
(``RepositorySpec.class_metric``); ``--switch quality`` the label-free quality counters
(``RepositorySpec.quality_metrics``: confidence against the ATC threshold in postprocess, input
statistics in preprocess), for a version served with its quality reference (``--reference``).
Two embedded Triton servers run the same repository except for that switch.
Both stay up for the whole run and are driven in turn (on, off, then off, on, ...) by the same
asyncio gRPC client with ``--concurrency`` requests in flight, so slow drifts of the machine (thermal,
other processes) hit both variants alike; an idle server costs next to nothing meanwhile. Two
targets are measured: the public ensemble (what users see) and the postprocess model alone (the
only step the counter touches, so its overhead is not hidden behind image decoding). Server-side,
the postprocess compute time per request comes from Triton's own counters.

    python -m benchmarks.class_counter --onnx artifacts/export/model.fp32.onnx
    python -m benchmarks.class_counter --switch quality --onnx artifacts/export/model.fp32.onnx \
        --reference artifacts/export/quality/fp32/quality_reference.json

Prints a table and, with ``--json PATH``, writes the numbers. Exit 0 unless a server fails.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from serving.repository.build import build_repository
from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion
from serving.server.embedded import EmbeddedServer, ServerConfig, ServerError, TritonNotFoundError, free_ports

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
VARIANTS = {"on": True, "off": False}
TARGETS = ("cifar10", "postprocess")


SWITCHES = {"class": "class_metric", "quality": "quality_metrics"}
SERIES = {"class": "predicted_class_total{", "quality": "input_statistic_total{"}


def spec_for(onnx: Path, on: bool, switch: str = "class", reference: Path | None = None) -> RepositorySpec:
    """The repository of one variant: ``switch``'s metrics ``on`` or off, everything else equal."""
    model = ServedModel(
        "wrn_fp32", "onnxruntime", (ServedVersion(1, onnx, reference),), production=1, max_batch_size=256
    )
    return RepositorySpec((model,), "wrn_fp32", CLASSES, MEAN, STD, **{SWITCHES[switch]: on})


def start_server(repo: Path, log_dir: Path) -> EmbeddedServer:
    http, grpc, metrics = free_ports(3)
    log = log_dir / "tritonserver.log"
    config = ServerConfig(repo, http, grpc, metrics, log_file=log, ort_threads=1, exit_timeout_s=3)
    return EmbeddedServer(config).start()


def png_batch(batch: int, seed: int) -> np.ndarray:
    """``batch`` random 32x32 PNGs as the ensemble's ``IMAGE``: ``BYTES [batch, 1]``."""
    from PIL import Image

    from client.core.transport import image_batch

    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(batch):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    return image_batch(blobs)


def payload(target: str, batch: int, seed: int) -> tuple[str, np.ndarray, str]:
    if target == "cifar10":
        return "IMAGE", png_batch(batch, seed), "BYTES"
    logits = np.random.default_rng(seed).normal(size=(batch, len(CLASSES))).astype(np.float32)
    return "LOGITS", logits, "FP32"


async def drive(url: str, target: str, inputs: list, duration_s: float, concurrency: int) -> dict:
    """Closed loop: ``concurrency`` workers, each sends its next request when the last returns."""
    import tritonclient.grpc.aio as grpcaio

    client = grpcaio.InferenceServerClient(url)
    ok = errors = 0
    deadline = time.perf_counter() + duration_s

    async def worker(k: int) -> None:
        nonlocal ok, errors
        while time.perf_counter() < deadline:
            name, array, dtype = inputs[k % len(inputs)]
            tensor = grpcaio.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            try:
                await client.infer(target, [tensor])
                ok += 1
            except Exception:  # counted, and the run goes on: errors are part of the report
                errors += 1
            k += concurrency

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        await client.close()
    return {"ok": ok, "errors": errors, "seconds": time.perf_counter() - start}


def postprocess_counters(metrics_url: str) -> tuple[float, float]:
    """(cumulative compute-infer µs, successful requests) of the postprocess model."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    values = {"nv_inference_compute_infer_duration_us": 0.0, "nv_inference_request_success": 0.0}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in values and 'model="postprocess"' in rest:
            values[name] += float(line.rsplit(" ", 1)[1])
    return values["nv_inference_compute_infer_duration_us"], values["nv_inference_request_success"]


def counter_series(metrics_url: str, switch: str = "class") -> int:
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return sum(line.startswith(SERIES[switch]) for line in text.splitlines())


def run_bench(
    onnx: Path,
    duration_s: float,
    rounds: int,
    concurrency: int,
    batch: int,
    workdir: Path,
    switch: str = "class",
    reference: Path | None = None,
) -> dict:
    """Start both variants, drive each target round by round, stop both; the report as a dict."""
    servers: dict[str, EmbeddedServer] = {}
    try:
        for name, flag in VARIANTS.items():
            repo = workdir / name / "model_repository"
            build_repository(spec_for(onnx, flag, switch, reference), repo)
            servers[name] = start_server(repo, workdir / name)
        for server in servers.values():
            server.wait_ready(180)
        totals = {(t, v): {"ok": 0, "errors": 0, "seconds": 0.0} for t in TARGETS for v in VARIANTS}
        per_round = []
        compute = {v: [0.0, 0.0] for v in VARIANTS}
        for target in TARGETS:
            inputs = [payload(target, batch, seed) for seed in range(16)]
            for server in servers.values():  # warm-up: first requests load lazily initialised paths
                asyncio.run(drive(server.url_grpc, target, inputs, min(2.0, duration_s), concurrency))
            for r in range(rounds):
                order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
                for name in order:
                    before = postprocess_counters(servers[name].url_metrics)
                    res = asyncio.run(drive(servers[name].url_grpc, target, inputs, duration_s, concurrency))
                    after = postprocess_counters(servers[name].url_metrics)
                    compute[name][0] += after[0] - before[0]
                    compute[name][1] += after[1] - before[1]
                    for key in ("ok", "errors", "seconds"):
                        totals[(target, name)][key] += res[key]
                    per_round.append({"target": target, "variant": name, "round": r, **res})
        results = []
        for target in TARGETS:
            rps = {v: totals[(target, v)]["ok"] / totals[(target, v)]["seconds"] for v in VARIANTS}
            results.append(
                {
                    "target": target,
                    "rps_on": rps["on"],
                    "rps_off": rps["off"],
                    "ratio_on_off": rps["on"] / rps["off"] if rps["off"] else None,
                    "errors": sum(totals[(target, v)]["errors"] for v in VARIANTS),
                }
            )
        us = {v: compute[v][0] / compute[v][1] if compute[v][1] else None for v in VARIANTS}
        return {
            # Proof that the switch worked: the "off" server must export no counter series at all.
            "switch": switch,
            "counter_series": {v: counter_series(s.url_metrics, switch) for v, s in servers.items()},
            "onnx": str(onnx),
            "duration_s": duration_s,
            "rounds": rounds,
            "concurrency": concurrency,
            "batch": batch,
            "results": results,
            "postprocess_compute_us_per_request": us,
            "rounds_detail": per_round,
        }
    finally:
        for server in servers.values():
            server.stop(grace=15)


def render(report: dict) -> str:
    lines = [
        f"{report.get('switch', 'class')} metrics on vs off: {report['rounds']} rounds x "
        f"{report['duration_s']:g} s per variant, "
        f"concurrency {report['concurrency']}, batch {report['batch']}, model {report['onnx']}",
        f"{'target':<12}{'on req/s':>10}{'off req/s':>11}{'on/off':>8}{'errors':>8}",
    ]
    for r in report["results"]:
        ratio = "-" if r["ratio_on_off"] is None else f"{r['ratio_on_off']:.3f}"
        lines.append(f"{r['target']:<12}{r['rps_on']:>10.1f}{r['rps_off']:>11.1f}{ratio:>8}{r['errors']:>8}")
    us = report["postprocess_compute_us_per_request"]
    fmt = {k: "-" if v is None else f"{v:.0f}" for k, v in us.items()}
    lines.append(f"postprocess compute per request (Triton counters): on {fmt['on']} us, off {fmt['off']} us")
    series = report["counter_series"]
    name = SERIES[report.get("switch", "class")].rstrip("{")
    lines.append(f"{name} series exported: on {series['on']}, off {series['off']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.class_counter", description=__doc__)
    parser.add_argument("--onnx", type=Path, default=Path("artifacts/export/model.fp32.onnx"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="images (or logit rows) per request")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--switch", choices=sorted(SWITCHES), default="class", help="which metrics to switch")
    parser.add_argument(
        "--reference", type=Path, help="the version's quality_reference.json (--switch quality)"
    )
    args = parser.parse_args(argv)
    if args.switch == "quality" and not (args.reference and args.reference.is_file()):
        print("error: --switch quality needs --reference quality_reference.json", file=sys.stderr)
        return 2
    if not args.onnx.is_file():
        print(f"error: ONNX classifier not found: {args.onnx} (pass --onnx)", file=sys.stderr)
        return 2
    if min(args.duration, args.rounds, args.concurrency, args.batch) <= 0:
        print("error: --duration, --rounds, --concurrency and --batch must be > 0", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory(prefix="bench-class-counter-") as tmp:
            report = run_bench(
                args.onnx, args.duration, args.rounds, args.concurrency, args.batch, Path(tmp),
                args.switch, args.reference,
            )  # fmt: skip
    except (ServerError, TritonNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
