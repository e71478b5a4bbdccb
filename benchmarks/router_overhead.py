"""What the release router adds at batch 1: the ensemble with and without it, on one server, in one run.

``python -m benchmarks.router_overhead --export-dir artifacts/export --images data/prepared/test_images``

One private ``tritonserver`` serves the fp32 artifact as versions 1 and 2 (production and a
candidate), and the run alternates, round after round, between two repository states rolled onto it
live: ``without`` (``preprocess -> wrn_fp32:1 -> postprocess``) and ``with`` (``preprocess -> router
-> postprocess``, canary weight 0 and no shadow, so every answer still comes from version 1 and the
only difference is the router's hop). Each round measures p50/p99 at concurrency 1 with one image
per request through gRPC; the overhead is read from the per-round differences, so a machine that
drifts between rounds does not bias it. ``--shadow`` adds a third state (shadow fraction 0.5), which
prices the shadow copies on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import reference_stack


def measure(grpc_url: str, blobs: list[bytes], seconds: float) -> dict:
    from client.tools.load_bench import measure_images

    return asyncio.run(measure_images(grpc_url, "cifar10", blobs, 1, 1, seconds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    reference_stack.add_arguments(p, "reports/bench_router_overhead.json")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=6.0, help="measured time per state per round")
    p.add_argument("--shadow", action="store_true", help="also measure the router with shadow 0.5")
    args = p.parse_args()

    from serving.repository.build import build_repository
    from serving.repository.spec import Release
    from serving.rollout.apply import apply
    from serving.server.embedded import EmbeddedServer, private_config

    ref = reference_stack.load(args)
    blobs = ref.blobs
    base = reference_stack.spec(ref, versions=(1, 2))
    states = {"without": base, "with": dataclasses.replace(base, release=Release("wrn_fp32", 2))}
    if args.shadow:
        states["with+shadow0.5"] = dataclasses.replace(base, release=Release("wrn_fp32", 2, 0.5, 0.0))
    figures: dict[str, list[dict]] = {name: [] for name in states}
    with tempfile.TemporaryDirectory(prefix="bench-router-") as tmp:
        repo = Path(tmp) / "repo"
        build_repository(base, repo)
        with EmbeddedServer(private_config(repo, Path(tmp))) as server:
            server.wait_ready(300)
            current = base
            measure(server.url_grpc, blobs, 2.0)  # warm-up
            for round_ in range(args.rounds):
                for name, spec in states.items():
                    apply(server.url_grpc, current, spec, server.config.restricted_header, repo, settle_s=0)
                    current = spec
                    measure(server.url_grpc, blobs, 1.0)  # the reloaded stubs' first calls
                    figures[name].append(measure(server.url_grpc, blobs, args.seconds))
                print(
                    f"round {round_ + 1}: "
                    + " | ".join(
                        f"{n} p50 {f[-1]['p50_ms']:.2f} p99 {f[-1]['p99_ms']:.2f} ms"
                        for n, f in figures.items()
                    ),
                    flush=True,
                )
    out: dict = {"rounds": args.rounds, "seconds": args.seconds, "states": {}}
    for name, rows in figures.items():
        out["states"][name] = {
            "p50_ms_median": round(float(np.median([r["p50_ms"] for r in rows])), 3),
            "p99_ms_median": round(float(np.median([r["p99_ms"] for r in rows])), 3),
        }
        if name != "without":
            for q in ("p50_ms", "p99_ms"):
                diffs = [r[q] - w[q] for r, w in zip(rows, figures["without"], strict=True)]
                out["states"][name][f"added_{q}"] = {
                    "median": round(float(np.median(diffs)), 3),
                    "min": round(min(diffs), 3),
                    "max": round(max(diffs), 3),
                }
    print(json.dumps(out, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
