"""Repeated releases of derived candidates against the reference model, under continuous client load.

What issue 31 asks to be measured: for each kind of candidate, over repeated runs, the verdict, the step
it came at, the time to the verdict, the time from the verdict to the candidate's last answer, and what
the clients got (failed and wrong answers) in each phase; and how often a good candidate is rolled back
at one and at several client threads. Everything is real: the embedded ``tritonserver`` serving the
reference WRN-28-10 (int8, the fastest form on a CPU), a Debian Prometheus scraping it every second, a
private MLflow store, and ``cifar10 release start`` as a user runs it (a subprocess per release).

Candidates are the production file with one step appended to its logits (:mod:`benchmarks.onnx_variants`),
each scored on the same 1,000 test rows the export scored production on, so its tags are honest:

* ``good`` - a small random bias per class (seeded per run): within a few tenths of a point;
* ``swapped`` - ``bird`` and ``truck`` exchanged (forced past the gate, which refuses it);
* ``worse`` - a bias towards ``cat`` that costs a few points (forced);
* ``failing`` - fails the requests whose mean input lies in one tail (about a fifth of the images);
* ``classes`` - only ``bird``, ``cat``, ``dog`` (another dataset's model): refused, not forceable.

    python -m benchmarks.release_trials --export-dir /tmp/ref/export --prepared /tmp/ref/prepared \\
        --runs 3 --threads 1 4 --out reports/release_trials
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

KINDS = ("good", "swapped", "worse", "failing", "classes")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Load:
    """``threads`` clients sending one labelled test image per request to ``cifar10`` until stopped."""

    def __init__(self, url: str, images: list[tuple[bytes, int]], threads: int, pause_s: float) -> None:
        self.url, self.images, self.pause_s = url, images, pause_s
        self.answers: list[tuple[float, bool, bool]] = []  # (sent, ok, correct)
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, seed: int) -> None:
        import tritonclient.grpc as grpcclient

        from client.core.transport import image_batch

        client = grpcclient.InferenceServerClient(self.url)
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            blob, label = self.images[int(rng.integers(len(self.images)))]
            inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(image_batch([blob]))
            sent = time.time()
            try:
                out = client.infer("cifar10", [inp], client_timeout=60).as_numpy("PROBABILITIES")
                self.answers.append((sent, True, int(out.argmax()) == label))
            except Exception:
                self.answers.append((sent, False, False))
            time.sleep(self.pause_s)
        client.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(60)


def score(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, float]]:
    from common.scored_split import class_precision
    from export.onnx_io import run_onnx

    predicted = run_onnx(path, x).argmax(1)
    return float(np.mean(predicted == y)), class_precision(predicted, y, CLASSES)


def build(kind: str, run: int, src: Path, folder: Path, x: np.ndarray, y: np.ndarray) -> tuple[Path, dict]:
    """The candidate file and the tags that differ from production's (its own honest test figures)."""
    from benchmarks.onnx_variants import onnx_variant

    dest = folder / f"{kind}-{run}.onnx"
    rng = np.random.default_rng(run)
    extra: dict[str, str] = {}
    if kind == "good":
        onnx_variant(src, dest, bias=list(rng.normal(0, 0.05, 10)))
    elif kind == "swapped":
        order = list(range(10))
        order[2], order[9] = 9, 2
        onnx_variant(src, dest, order=order)
    elif kind == "worse":
        onnx_variant(src, dest, bias=[3.5 if c == "cat" else 0.0 for c in CLASSES])  # 93.1 -> 90.0 %
    elif kind == "failing":
        means = x.reshape(len(x), -1).mean(1)
        onnx_variant(
            src, dest, fail_beyond=float(np.percentile(means, 80)), bias=list(rng.normal(0, 1e-3, 10))
        )
    else:
        onnx_variant(src, dest, order=[2, 3, 5], bias=list(rng.normal(0, 1e-3, 3)))
        extra["classes"] = json.dumps(["bird", "cat", "dog"])
    if kind in ("failing", "classes"):
        accuracy, precision = score(src, x, y)  # what it scores on the images it answers
    else:
        accuracy, precision = score(dest, x, y)
    extra |= {
        "test_accuracy": f"{accuracy:.4f}",
        "test_class_precision": json.dumps(precision, sort_keys=True),
    }
    return dest, extra


def last_candidate_answer(prom, model: str, version: int, verdict_at: float) -> float | None:
    """Seconds from the verdict to the last scrape in which the candidate's served count still rose."""
    query = f'sum(release_route_latency_ms_count{{model="{model}",version="{version}",path="served"}})'
    series = prom.range(query, verdict_at - 120, verdict_at + 60, 0.5)
    points = series[0][1] if series else []
    rises = [t for (t0, v0), (t, v) in itertools.pairwise(points) if v > v0]
    return round(max(rises) - verdict_at, 1) if rises else None


def phases(record, answers: list[tuple[float, bool, bool]], end: float) -> dict[str, dict]:
    """The clients' answers, failures and wrong answers per step of the release."""
    marks = [(e["at"], e["label"]) for e in record.log] + [(end, "")]
    out = {}
    for (start, label), (stop, _) in itertools.pairwise(marks):
        mine = [a for a in answers if start <= a[0] < stop]
        out[label] = {
            "answers": len(mine),
            "failed": sum(not ok for _, ok, _ in mine),
            "wrong": sum(ok and not right for _, ok, right in mine),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 4], help="client threads for `good`")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    p.add_argument("--out", type=Path, default=Path("reports/release_trials"))
    p.add_argument(
        "--no-probe", action="store_true", help="release.probe_images 0: the label-free figures alone"
    )
    args = p.parse_args(argv)
    from benchmarks.onnx_variants import register_variant
    from benchmarks.release_stack import TrialStack

    args.out.mkdir(parents=True, exist_ok=True)
    stack = TrialStack(args.export_dir, args.prepared, args.out, probe=not args.no_probe)
    rows = []
    try:
        plan = [("good", t) for t in args.threads if "good" in args.kinds]
        plan += [(k, args.threads[0]) for k in args.kinds if k != "good"]
        for kind, threads in plan:
            for run in range(args.runs):
                path, extra = build(kind, run, stack.production_file, stack.tmp, stack.x, stack.y)
                version = register_variant(stack.name, 1, path, extra)
                row = stack.release(
                    kind, version, threads, force=kind in ("swapped", "worse", "failing", "classes")
                )
                row["run"] = run
                rows.append(row)
                print(json.dumps(row), flush=True)
                (args.out / "trials.json").write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        stack.close()
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    print("\nkind     threads  outcome      step         verdict_s  last_cand_s  clients", end="")
    print(" (answers/failed/wrong per phase)")
    for r in rows:
        clients = "; ".join(f"{k}: {v['answers']}/{v['failed']}/{v['wrong']}" for k, v in r["phases"].items())
        print(
            f"{r['kind']:<8} {r['threads']:>7}  {r['outcome']:<12} {r['step']:<12} {r['verdict_s']!s:>9}  "
            f"{r['last_candidate_answer_s']!s:>11}  {clients}"
        )
    for threads in sorted({r["threads"] for r in rows if r["kind"] == "good"}):
        good = [r for r in rows if r["kind"] == "good" and r["threads"] == threads]
        rolled = sum(r["outcome"] != "promoted" for r in good)
        print(f"good candidate, {threads} client thread(s): {rolled} of {len(good)} not promoted")


if __name__ == "__main__":
    sys.exit(main())
