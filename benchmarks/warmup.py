"""What warm-up buys at a rollout: first requests after a load, and p99 during a promote under load.

``python -m benchmarks.warmup --export-dir artifacts/export --images data/prepared/test_images``

Private ``tritonserver``s serve the same fp32 artifact, one repository with ``model_warmup``
samples, one without (``serving.warmup``) and, with ``--limits N``, one per ``warmup_max_batch``
N; the run rotates through them, round by round.
Each round, on each server, from ``wrn_fp32:1`` in production:

1. **First requests after a load.** A rollout promotes version 2 (a new version of the same file:
   loaded, then the ensemble switched to it, postprocess reloaded with it), exactly as ``sync
   --server`` does; then 5 requests of one image, one after another, and 20 more for the steady p50.
2. **p99 during a promote under load.** Back at version 1, a closed loop of ``--concurrency``
   clients runs for ``--before-s``, the same promote happens, and the loop runs ``--after-s`` more.
   The p99 of the requests that started between the promote's start and its end plus ``--after-s``
   is compared with the p99 before it.

No timing is asserted anywhere; the figures are printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import reference_stack


def one_image(client, blob: bytes) -> float:
    """Latency in ms of one single-image request through ``cifar10`` over gRPC."""
    import tritonclient.grpc as grpcclient

    from client.core.transport import image_batch

    inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    inp.set_data_from_numpy(image_batch([blob]))
    start = time.perf_counter()
    client.infer("cifar10", [inp])
    return (time.perf_counter() - start) * 1e3


class Load:
    """A closed loop of ``concurrency`` clients; every request's (start time, latency, ok)."""

    def __init__(self, url: str, blobs: list[bytes], concurrency: int) -> None:
        self.url, self.blobs, self.stop = url, blobs, threading.Event()
        self.rows: list[tuple[float, float, bool]] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)
        ]

    def _run(self, seed: int) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        i = seed
        while not self.stop.is_set():
            start = time.perf_counter()
            try:
                latency, ok = one_image(client, self.blobs[i % len(self.blobs)]), True
            except Exception:  # a failed request is a finding, counted, never a crash of the loop
                latency, ok = (time.perf_counter() - start) * 1e3, False
            self.rows.append((start, latency, ok))
            i += len(self.threads)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def p99(rows: list[tuple[float, float, bool]], lo: float, hi: float) -> tuple[float, int, int]:
    picked = [r for r in rows if lo <= r[0] < hi]
    lat = [r[1] for r in picked]
    return (
        (float(np.percentile(lat, 99)) if lat else float("nan")),
        len(picked),
        sum(not r[2] for r in picked),
    )


def one_round(server, repo: Path, v1, v12, blobs: list[bytes], args) -> dict:
    import tritonclient.grpc as grpcclient

    from serving.rollout.apply import apply

    header, url = server.config.restricted_header, server.url_grpc.removeprefix("grpc://")
    client = grpcclient.InferenceServerClient(url)
    apply(url, v12, v1, header, repo, settle_s=0)  # back to version 1 only (version 2 unloaded)
    start = time.perf_counter()
    apply(url, v1, v12, header, repo, settle_s=0)
    promote_s = time.perf_counter() - start
    first = [one_image(client, blobs[i % len(blobs)]) for i in range(5)]
    steady = float(np.median([one_image(client, blobs[i % len(blobs)]) for i in range(20)]))
    apply(url, v12, v1, header, repo, settle_s=0)
    with Load(url, blobs, args.concurrency) as load:
        time.sleep(args.before_s)
        t0 = time.perf_counter()
        apply(url, v1, v12, header, repo, settle_s=0)
        t1 = time.perf_counter()
        time.sleep(args.after_s)
    before = p99(load.rows, t0 - args.before_s + 0.5, t0)
    during = p99(load.rows, t0, t1 + args.after_s)
    return {
        "promote_s": round(promote_s, 2),
        "first_5_ms": [round(x, 1) for x in first],
        "steady_p50_ms": round(steady, 1),
        "p99_before_ms": round(before[0], 1),
        "p99_during_promote_ms": round(during[0], 1),
        "requests_during": during[1],
        "failed_during": during[2],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    reference_stack.add_arguments(p, "reports/bench_warmup.json")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--before-s", type=float, default=4.0)
    p.add_argument("--after-s", type=float, default=4.0)
    p.add_argument("--limits", type=int, nargs="*", default=[], help="also warm only batches up to each N")
    args = p.parse_args()

    from serving.repository.build import build_repository
    from serving.server.embedded import EmbeddedServer, private_config

    ref = reference_stack.load(args)
    blobs = ref.blobs
    base = reference_stack.spec(ref)
    pair = (base, reference_stack.spec(ref, versions=(1, 2), production=2))
    modes = {
        "warm-up": pair,
        **{
            f"warm-up <= {n}": tuple(dataclasses.replace(s, warmup_max_batch=n) for s in pair)
            for n in args.limits
        },
        "no warm-up": tuple(dataclasses.replace(s, warmup=False) for s in pair),
    }
    figures: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
        servers = {}
        try:
            for i, (mode, (_, v12)) in enumerate(modes.items()):
                repo = Path(tmp) / f"repo{i}"
                build_repository(v12, repo)
                servers[mode] = (EmbeddedServer(private_config(repo, Path(tmp) / str(i))).start(), repo)
            for server, _ in servers.values():
                server.wait_ready(600)
            for round_ in range(args.rounds):
                order = list(modes)[round_ % len(modes) :] + list(modes)[: round_ % len(modes)]
                for mode in order:
                    server, repo = servers[mode]
                    figures[mode].append(one_round(server, repo, *modes[mode], blobs, args))
                    print(f"round {round_ + 1} {mode}: {figures[mode][-1]}", flush=True)
        finally:
            for server, _ in servers.values():
                server.stop(grace=20)
    out: dict = {"rounds": args.rounds, "concurrency": args.concurrency, "modes": {}}
    for mode, rows in figures.items():
        out["modes"][mode] = {
            "first_request_ms_median": round(float(np.median([r["first_5_ms"][0] for r in rows])), 1),
            "requests_2_to_5_ms_median": round(
                float(np.median([x for r in rows for x in r["first_5_ms"][1:]])), 1
            ),
            "steady_p50_ms_median": round(float(np.median([r["steady_p50_ms"] for r in rows])), 1),
            "promote_s_median": round(float(np.median([r["promote_s"] for r in rows])), 2),
            "p99_before_ms_median": round(float(np.median([r["p99_before_ms"] for r in rows])), 1),
            "p99_during_promote_ms_median": round(
                float(np.median([r["p99_during_promote_ms"] for r in rows])), 1
            ),
            "failed_during_promote": sum(r["failed_during"] for r in rows),
            "rounds": rows,
        }
    print(
        json.dumps(
            {m: {k: v for k, v in f.items() if k != "rounds"} for m, f in out["modes"].items()}, indent=2
        )
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
