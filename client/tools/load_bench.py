"""``client bench``: throughput and latency against concurrency, per protocol and request form.

A closed-loop generator on tritonclient's asyncio APIs (``perf_analyzer`` is not installable here):
C workers each keep exactly one request in flight, for a fixed duration or request count per level.
Two measurements keep it honest about its own cost:

* every level records the generator's CPU time per request (``client_cpu_ms_per_request``) and the
  CPU cores it used - on a machine the server shares, that is CPU the server did not get;
* ``--self-test`` runs the same sweep against :mod:`client.tools.fake_server`, a server that
  answers instantly, in another process: the rate reached there is the most this generator can
  measure, and the report states how far below it each real measurement was.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from client.core import images as img
from client.core.errors import BadInput, ModelNotReady
from client.core.served_model import InputContract, read_contract
from client.core.transport import AsyncTriton, Endpoint, classify, wait_live
from client.jobs.folder_batch import percentiles
from common.fsutil import write_json


class BenchReport(TypedDict):
    """``bench.json``: the settings, the host's CPU count, the sweep and the generator's own capacity."""

    config: dict[str, Any]
    cpu_count: int | None
    results: list[dict[str, Any]]
    self_test: list[dict[str, Any]]
    notes: list[str]


class ImagesMeasured(TypedDict):
    """One load level of :func:`measure_images`: throughput and latency of whole requests."""

    images_per_request: int
    concurrency: int
    throughput_img_s: float
    p50_ms: float
    p99_ms: float
    errors: int


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    http_url: str = "localhost:8000"
    grpc_url: str = "localhost:8001"
    protocols: tuple[str, ...] = ("http", "grpc")
    modes: tuple[str, ...] = ("bytes", "tensor")
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    duration_s: float = 5.0
    requests: int | None = None  # per level; replaces duration_s when set
    warmup_s: float = 1.0
    ensemble: str = "cifar10"
    classifier: str = "wrn_fp32"
    classifier_version: str = ""
    images: Path | None = None
    payloads: int = 64
    seed: int = 0
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    self_test: bool = False
    self_test_only: bool = False
    self_test_duration_s: float = 2.0


# The stub answers without looking at the values; a real server declares its own (served_model).
STUB_CONTRACT = InputContract(("stub",), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def load_payloads(cfg: BenchConfig) -> list[bytes]:
    """Encoded images, read and checked once so the loop only sends."""
    items = (
        img.discover(cfg.images, limit=cfg.payloads, seed=cfg.seed)
        if cfg.images
        else img.synthetic(cfg.payloads, cfg.seed)
    )
    encoded = []
    for item in items:
        try:
            data = item.read()
            img.check_encoded(data)
            encoded.append(data)
        except (OSError, img.UnreadableImage) as exc:
            log.warning("bench: skipping %s: %s", item.path, exc)
    if not encoded:
        raise BadInput(f"no usable images in {cfg.images}")
    return encoded


async def measure(
    send: Callable[[object], Awaitable[object]],
    payloads: list,
    concurrency: int,
    duration_s: float,
    requests: int | None,
    warmup_s: float,
) -> dict:
    """One closed-loop level: warm-up (discarded), then the measured window."""

    async def run(window_s: float, budget: int | None) -> tuple[list[float], Counter, float, float]:
        latencies: list[float] = []
        errors: Counter = Counter()
        issued = [0]
        stop = time.perf_counter() + window_s

        async def worker() -> None:
            while time.perf_counter() < stop and (budget is None or issued[0] < budget):
                i = issued[0]
                issued[0] += 1
                t0 = time.perf_counter()
                try:
                    await send(payloads[i % len(payloads)])
                except Exception as exc:
                    info = classify(exc)
                    errors[info.kind] += 1
                    if info.transient:
                        await asyncio.sleep(0.05)  # do not spin on a server that is down
                else:
                    latencies.append((time.perf_counter() - t0) * 1000.0)

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - t0, time.process_time() - cpu0

    if warmup_s > 0:
        await run(warmup_s, None)
    window = float("inf") if requests else duration_s
    latencies, errors, elapsed, cpu = await run(window, requests)
    done = len(latencies) + sum(errors.values())
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": dict(errors),
        "duration_s": round(elapsed, 3),
        "throughput_rps": round(len(latencies) / elapsed, 2) if elapsed > 0 else 0.0,
        "latency_ms": percentiles(latencies),
        "client_cpu_ms_per_request": round(cpu * 1000 / done, 4) if done else None,
        "client_cpu_cores": round(cpu / elapsed, 3) if elapsed > 0 else None,
    }


async def measure_images(
    grpc_url: str,
    model: str,
    images: list[bytes],
    per_request: int,
    concurrency: int,
    seconds: float,
    warmup_s: float = 1.0,
) -> ImagesMeasured:
    """Closed loop of encoded images, ``per_request`` per request, through ``model`` over gRPC.

    Throughput is in images per second (requests x ``per_request``); latencies are per request.
    """
    groups = [[images[(i + j) % len(images)] for j in range(per_request)] for i in range(len(images))]
    client = AsyncTriton(Endpoint("grpc", "unused:0", grpc_url, 60.0), conn_limit=concurrency)
    try:
        row = await measure(
            lambda g: client.infer_images(model, g, k=1), groups, concurrency, seconds, None, warmup_s
        )
    finally:
        await client.close()
    return {
        "images_per_request": per_request,
        "concurrency": concurrency,
        "throughput_img_s": round(row["throughput_rps"] * per_request, 2),
        "p50_ms": row["latency_ms"]["p50"],
        "p99_ms": row["latency_ms"]["p99"],
        "errors": sum(row["errors"].values()),
    }


async def sweep(cfg: BenchConfig, http_url: str, grpc_url: str, duration_s: float, target: str) -> list[dict]:
    """Every protocol x mode x concurrency level against one server; exit codes 3/4 on preflight."""
    encoded = load_payloads(cfg)
    results = []
    for protocol in cfg.protocols:
        for mode in cfg.modes:
            endpoint = Endpoint(protocol, http_url, grpc_url, cfg.request_timeout_s)
            client = AsyncTriton(endpoint, conn_limit=max(cfg.concurrency))
            try:
                await wait_live(client, cfg.connect_timeout_s)
                model, version = (
                    (cfg.ensemble, "") if mode == "bytes" else (cfg.classifier, cfg.classifier_version)
                )
                if not await client.model_ready(model, version):
                    where = f"{model} version {version}" if version else model
                    raise ModelNotReady(f"{where} is not ready on {endpoint.url}")
                if mode == "bytes":

                    def send(data, c=client, m=model):
                        return c.infer_bytes(m, data)

                    payloads: list = encoded
                else:

                    def send(x, c=client, m=model, v=version):
                        return c.infer_tensor(m, x, v)

                    contract = (
                        await read_contract(client, model, need_normalisation=True)
                        if target == "server"
                        else STUB_CONTRACT
                    )
                    payloads = [img.to_tensor(data, contract.mean, contract.std) for data in encoded]
                for level in cfg.concurrency:
                    row = await measure(send, payloads, level, duration_s, cfg.requests, cfg.warmup_s)
                    row = {"target": target, "protocol": protocol, "mode": mode, "model": model, **row}
                    log.info(
                        "%s %s/%s c=%d: %.1f req/s, p99 %s ms",
                        target,
                        protocol,
                        mode,
                        level,
                        row["throughput_rps"],
                        row["latency_ms"]["p99"],
                    )
                    results.append(row)
            finally:
                await client.close()
    return results


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(f"{r['protocol']}/{r['mode']}", []).append(r)
    return {k: sorted(v, key=lambda r: r["concurrency"]) for k, v in out.items()}


def notes(server: list[dict], stub: list[dict]) -> list[str]:
    """Plain-language reading of the sweep: where throughput stops growing, and the client's share."""
    out = []
    capacity = {(r["protocol"], r["mode"], r["concurrency"]): r["throughput_rps"] for r in stub}
    for name, rows in _series(server).items():
        for prev, cur in itertools.pairwise(rows):
            if cur["throughput_rps"] < prev["throughput_rps"] * 1.05:
                a, b = prev["throughput_rps"], cur["throughput_rps"]
                p, q = prev["latency_ms"]["p99"], cur["latency_ms"]["p99"]
                out.append(
                    f"{name}: saturated at concurrency {prev['concurrency']}: going to {cur['concurrency']} "
                    f"changed throughput {a} -> {b} req/s while p99 went {p} -> {q} ms "
                    "(requests queue on the server)"
                )
                break
        busiest = max(rows, key=lambda r: r["client_cpu_cores"] or 0)
        out.append(
            f"{name}: the generator used at most {busiest['client_cpu_cores']} CPU cores "
            f"({busiest['client_cpu_ms_per_request']} ms CPU per request) of {os.cpu_count()}"
        )
        ratios = [
            (r["concurrency"], capacity[(r["protocol"], r["mode"], r["concurrency"])] / r["throughput_rps"])
            for r in rows
            if r["throughput_rps"] and capacity.get((r["protocol"], r["mode"], r["concurrency"]))
        ]
        if ratios:
            worst = min(ratios, key=lambda x: x[1])
            out.append(
                f"{name}: the generator's own capacity (stub server) is >= {worst[1]:.1f}x the measured "
                f"throughput at every level (closest at concurrency {worst[0]})"
            )
        if any(r["errors"] for r in rows):
            out.append(f"{name}: some requests failed: {[r['errors'] for r in rows if r['errors']]}")
    return out


def plot(report: dict, path: Path) -> Path:
    """Throughput and p99 latency against concurrency, one line per protocol/mode (stub dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    colors: dict[str, str] = {}
    levels: set[int] = set()
    for rows, style, suffix in (
        (report["results"], "-o", ""),
        (report.get("self_test", []), "--x", " (stub)"),
    ):
        for name, series in _series(rows).items():
            xs = [r["concurrency"] for r in series]
            levels.update(xs)
            (line,) = ax_t.plot(
                xs, [r["throughput_rps"] for r in series], style, label=name + suffix, color=colors.get(name)
            )
            colors.setdefault(name, line.get_color())  # a series and its stub ceiling share a colour
            if not suffix:
                ax_l.plot(xs, [r["latency_ms"]["p99"] for r in series], style, label=name, color=colors[name])
    for ax, ylabel in ((ax_t, "throughput [req/s]"), (ax_l, "p99 latency [ms]")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(levels), [str(c) for c in sorted(levels)])
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    if report.get("self_test"):
        ax_t.set_yscale("log")
    fig.suptitle(
        "client bench" + (" (dashed: generator capacity vs a stub server)" if report.get("self_test") else "")
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def run_bench(cfg: BenchConfig, out_dir: Path) -> BenchReport:
    """Self-test (optional) and server sweep; writes ``bench.json`` and ``bench.png`` into ``out_dir``."""
    from client.tools.fake_server import StubServer

    stub: list[dict] = []
    if cfg.self_test or cfg.self_test_only:
        with StubServer() as s:
            stub_cfg = dataclasses.replace(cfg, warmup_s=min(cfg.warmup_s, 0.5))
            stub = asyncio.run(sweep(stub_cfg, s.http_url, s.grpc_url, cfg.self_test_duration_s, "stub"))
    server = (
        []
        if cfg.self_test_only
        else asyncio.run(sweep(cfg, cfg.http_url, cfg.grpc_url, cfg.duration_s, "server"))
    )
    report: BenchReport = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
        "cpu_count": os.cpu_count(),
        "results": server,
        "self_test": stub,
        "notes": notes(server, stub) if server else notes(stub, []),
    }
    out_dir = Path(out_dir)
    write_json(out_dir / "bench.json", report)
    plot(report, out_dir / "bench.png")
    return report
