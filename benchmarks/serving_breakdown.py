"""Where a batch-1 request's time goes, from Triton's own per-model statistics, beside in-process ORT.

``python -m benchmarks.serving_breakdown --export-dir artifacts/export --images data/prepared/test_images``

One private ``tritonserver`` serves the fp32 artifact; ``--requests`` single-image requests go one
after another (concurrency 1) through the public ``cifar10`` ensemble over gRPC, then as many
tensors straight to ``wrn_fp32``. Triton's statistics (``queue``, ``compute_input``,
``compute_infer``, ``compute_output`` per model, differences over the measured requests) split the
served time into the gRPC round trip (client-observed minus the ensemble's own time), each python
step and the classifier's stub; in-process ONNX Runtime on the same file, in the same run, is the
floor. ``--spinning`` sets when the server's ONNX Runtime threads busy-wait (``run``, the default:
only during a run; ``always``: also after it, ONNX Runtime's default; ``off``), which moves time
between the classifier and the python steps on a small host. For the overhead itself, measured
interleaved so the host's drift cancels, see :mod:`benchmarks.serving_overhead`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import reference_stack
from serving.server.environment import ORT_SPINNING_MODES

MODELS = ("cifar10", "preprocess", "wrn_fp32", "postprocess")
PHASES = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def _stats(client) -> dict:
    return {m: client.get_inference_statistics(m, as_json=True)["model_stats"] for m in MODELS}


def _per_request_ms(before: dict, after: dict) -> dict[str, dict[str, float]]:
    out = {}
    for model in MODELS:
        row = {}
        for phase in PHASES:

            def total(stats: dict, key: str, m: str = model, p: str = phase) -> int:
                return sum(int(v["inference_stats"][p][key]) for v in stats[m])

            count = total(after, "count") - total(before, "count")
            row[phase] = round((total(after, "ns") - total(before, "ns")) / max(1, count) / 1e6, 3)
        out[model] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    reference_stack.add_arguments(p, "reports/bench_serving_breakdown.json")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--spinning", choices=ORT_SPINNING_MODES, default="run", help="server ORT threads")
    args = p.parse_args()

    import tritonclient.grpc as grpcclient

    from client.core.transport import image_batch
    from export.onnx_io import session
    from serving.repository.build import build_repository
    from serving.server.embedded import EmbeddedServer, private_config

    ref = reference_stack.load(args)
    onnx, blobs = ref.onnx, ref.blobs
    tensor = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)

    sess = session(onnx)
    for _ in range(20):
        sess.run(None, {"input": tensor})
    ort = []
    for _ in range(args.requests):
        start = time.perf_counter()
        sess.run(None, {"input": tensor})
        ort.append((time.perf_counter() - start) * 1e3)
    del sess

    spec = reference_stack.spec(ref)
    out: dict = {"requests": args.requests, "ort_spinning": args.spinning}
    with tempfile.TemporaryDirectory(prefix="bench-breakdown-") as tmp:
        build_repository(spec, Path(tmp) / "repo")
        config = private_config(Path(tmp) / "repo", Path(tmp), ort_spinning=args.spinning)
        with EmbeddedServer(config) as server:
            server.wait_ready(300)
            client = grpcclient.InferenceServerClient(server.url_grpc.removeprefix("grpc://"))

            def ensemble(i: int) -> float:
                inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
                inp.set_data_from_numpy(image_batch([blobs[i % len(blobs)]]))
                start = time.perf_counter()
                client.infer("cifar10", [inp])
                return (time.perf_counter() - start) * 1e3

            def direct(_: int) -> float:
                inp = grpcclient.InferInput("input", [1, 3, 32, 32], "FP32")
                inp.set_data_from_numpy(tensor)
                start = time.perf_counter()
                client.infer("wrn_fp32", [inp])
                return (time.perf_counter() - start) * 1e3

            for name, call in (("ensemble", ensemble), ("tensor", direct)):
                for i in range(20):
                    call(i)
                before = _stats(client)
                lat = [call(i) for i in range(args.requests)]
                out[name] = {
                    "client_p50_ms": round(statistics.median(lat), 3),
                    "client_mean_ms": round(statistics.mean(lat), 3),
                    "server_ms": _per_request_ms(before, _stats(client)),
                }
    ort_p50 = statistics.median(ort)
    out["ort_in_process"] = {"p50_ms": round(ort_p50, 3), "mean_ms": round(statistics.mean(ort), 3)}
    for name, own in (("ensemble", "cifar10"), ("tensor", "wrn_fp32")):
        figures = out[name]
        figures["overhead_p50_ms"] = round(figures["client_p50_ms"] - ort_p50, 3)
        figures["grpc_and_client_ms"] = round(
            figures["client_mean_ms"] - figures["server_ms"][own]["success"], 3
        )
    out["classifier_stub_over_ort_ms"] = round(
        out["ensemble"]["server_ms"]["wrn_fp32"]["compute_infer"] - out["ort_in_process"]["mean_ms"], 3
    )
    print(json.dumps(out, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
