"""``client batch``: send a folder (or N synthetic images) to the server and account for every one.

Two request forms:

* ``bytes`` - the encoded file through the public ``cifar10`` ensemble (what real callers do);
* ``tensor`` - decoded and normalised here, sent straight to a classifier (``wrn_fp32``), optionally
  to one explicit version: checks a classifier without the python pre/post-processing in the way.

Outputs: ``predictions.csv`` (one row per input, always) and ``summary.json`` (counts, throughput,
latency percentiles, prediction mix, errors by type, and the change of the server's own counters).
"""

from __future__ import annotations

import asyncio
import csv
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from client.core import images as img
from client.core.errors import BadInput, ClientError, ModelNotReady
from client.core.request_loop import DEFAULT_REQUEST_BATCH, Outcome, RetryPolicy, run_all
from client.core.served_model import read_contract
from client.core.transport import AsyncTriton, Endpoint, classify, wait_live
from common import prom_text as promscrape
from common.fsutil import atomic_path, write_json

MODES = ("bytes", "tensor")
DEFAULT_MODEL = {"bytes": "cifar10", "tensor": "wrn_fp32"}
LOST = ("connection_refused", "disconnected")  # retry kinds that mean the server was (re)starting
CSV_FIELDS = (
    "path",
    "true_label",
    "predicted_label",
    "probability",
    "latency_ms",
    "status",
    "error",
    "attempts",
)


@dataclass(frozen=True)
class BatchConfig:
    """Everything one run needs; ``model=None`` picks the ensemble (bytes) or ``wrn_fp32`` (tensor)."""

    endpoint: Endpoint = field(default_factory=Endpoint)
    mode: str = "bytes"
    model: str | None = None
    model_version: str = ""
    concurrency: int = 8
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout_s: float = 10.0
    metrics_url: str | None = "http://localhost:8002/metrics"
    top_k: int = 3
    input_name: str = "input"
    output_name: str = "logits"
    max_rps: float | None = None
    progress: bool = True
    # Images per request: one request's fixed cost (network, scheduling, python hops) is shared by
    # them all. Capped by the model's max_batch_size; 1 sends each image on its own.
    request_batch: int = DEFAULT_REQUEST_BATCH

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"--mode must be one of {MODES}, got {self.mode!r}")
        if self.concurrency < 1 or self.top_k < 1 or self.request_batch < 1:
            raise BadInput("--concurrency, --top-k and --request-batch must be >= 1")

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL[self.mode]


@dataclass
class Record:
    """One row of ``predictions.csv`` plus the top-k kept in memory for sample reports."""

    path: str
    true_label: str | None
    predicted_label: str | None
    probability: float | None
    latency_ms: float | None
    status: str
    error: str | None
    attempts: int
    error_kind: str | None = None
    topk: list[tuple[str, float]] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)


@dataclass
class BatchResult:
    records: list[Record]
    summary: dict
    classes: tuple[str, ...] = ()  # as the served model declares them


def _record(item: img.ImageItem, out: Outcome) -> Record:
    labels, probs, _ = out.value if out.value is not None else ([], [], None)
    return Record(
        path=item.path,
        true_label=item.label,
        predicted_label=labels[0] if labels else None,
        probability=round(probs[0], 6) if probs else None,
        latency_ms=round(out.latency_ms, 3) if out.latency_ms is not None else None,
        status=out.status,
        error=f"{out.error_kind}: {out.error}" if out.error else None,
        attempts=out.attempts,
        error_kind=out.error_kind,
        topk=[(lab, round(float(p), 6)) for lab, p in zip(labels, probs, strict=True)],
        retries=dict(out.retries),
    )


def percentiles(values: list[float], qs: tuple[int, ...] = (50, 90, 95, 99)) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, float | None] = {
        f"p{q}": (round(float(np.percentile(arr, q)), 3) if arr.size else None) for q in qs
    }
    out["mean"] = round(float(arr.mean()), 3) if arr.size else None
    out["max"] = round(float(arr.max()), 3) if arr.size else None
    return out


def summarize(
    records: list[Record], wall_s: float, cfg: BatchConfig, server: dict, request_batch: int | None = None
) -> dict:
    status = Counter(r.status for r in records)
    ok = [r for r in records if r.status == "ok"]
    labelled = [r for r in ok if r.true_label is not None]
    retried = [r for r in records if r.attempts > 1]
    retries: Counter = Counter()
    for r in records:
        retries.update(r.retries)
    if any(kind in retries for kind in LOST):
        # A counter can reset without ever going down (e.g. from 0), so say it whenever it may have.
        server = {
            **server,
            "connection_lost": True,
            "note": "the server went away during the run (restart?): its counters may have reset",
        }
    summary = {
        "model": cfg.model_name,
        "model_version": cfg.model_version or None,
        "mode": cfg.mode,
        "protocol": cfg.endpoint.protocol,
        "url": cfg.endpoint.url,
        "concurrency": cfg.concurrency,
        "request_batch": request_batch or cfg.request_batch,
        "counts": {
            "total": len(records),
            "ok": status["ok"],
            "error": status["error"],
            "skipped": status["skipped"],
            "retried_images": len(retried),
            "retry_attempts": sum(r.attempts - 1 for r in retried),
        },
        "duration_s": round(wall_s, 3),
        "throughput_img_per_s": round(len(ok) / wall_s, 3) if wall_s > 0 else None,
        "latency_ms": percentiles([r.latency_ms for r in ok if r.latency_ms is not None]),
        "predicted_classes": dict(sorted(Counter(r.predicted_label for r in ok).items())),
        "errors_by_type": dict(sorted(Counter(r.error_kind for r in records if r.status == "error").items())),
        "retries_by_type": dict(sorted(retries.items())),
        "skipped_by_type": dict(
            sorted(Counter(r.error_kind for r in records if r.status == "skipped").items())
        ),
        "server_metrics": server,
    }
    if labelled:
        correct = sum(r.predicted_label == r.true_label for r in labelled)
        summary["accuracy_on_labelled"] = round(correct / len(labelled), 6)
    return summary


async def _preflight(client: AsyncTriton, cfg: BatchConfig) -> None:
    await wait_live(client, cfg.connect_timeout_s)
    where = f"{cfg.model_name}" + (f" version {cfg.model_version}" if cfg.model_version else "")
    try:
        ready = await client.model_ready(cfg.model_name, cfg.model_version)
    except Exception as exc:
        raise ModelNotReady(f"{where} is not ready: {classify(exc).message}") from exc
    if not ready:
        raise ModelNotReady(f"{where} is not ready on {cfg.endpoint.url}")


async def _max_batch(client: AsyncTriton, model: str) -> int:
    """The model's ``max_batch_size`` (0, a model that does not batch, means one image per request)."""
    config = await client.model_config(model)
    return max(1, int(config.get("max_batch_size") or 0))


def check_folder_classes(
    labels: set[str] | list[str], served: tuple[str, ...], model: str, exact: bool = False
) -> None:
    """Labelled images are scored against the served classes: a label the model does not have is
    refused before any request, naming both lists; ``exact``: the folder must hold every served class
    too (offline evaluation: a ten-class model's accuracy on a three-class folder means nothing).
    An unlabelled folder is not scored: any goes.
    """
    folder = sorted(set(labels))
    if folder and (set(folder) != set(served) if exact else not set(folder) <= set(served)):
        raise BadInput(
            f"the folder's classes {folder} are not those {model} serves {list(served)}: its accuracy "
            "would compare other label sets (evaluate a model of these classes: registry.model_prefix)"
        )


async def run_async(items: list[img.ImageItem], cfg: BatchConfig) -> BatchResult:
    """Preflight (exit codes 3/4), metrics snapshot, all requests, snapshot again, summary."""
    from tqdm import tqdm

    client = AsyncTriton(cfg.endpoint, conn_limit=cfg.concurrency)
    try:
        await _preflight(client, cfg)
        contract = await read_contract(client, cfg.model_name, need_normalisation=cfg.mode == "tensor")
        classes = contract.classes
        check_folder_classes({i.label for i in items if i.label is not None}, classes, cfg.model_name)
        before = await asyncio.to_thread(promscrape.scrape_settled, cfg.metrics_url)

        request_batch = min(cfg.request_batch, await _max_batch(client, cfg.model_name))
        if cfg.mode == "bytes":

            def prepare(item: img.ImageItem) -> bytes:
                data = item.read()
                img.check_encoded(data)
                return data

            async def send(blobs: list[bytes]):
                return await client.infer_images(cfg.model_name, blobs, cfg.top_k, cfg.model_version)
        else:

            def prepare(item: img.ImageItem) -> np.ndarray:
                return img.to_tensor(item.read(), contract.mean, contract.std)

            async def send(xs: list[np.ndarray]):
                logits = await client.infer_tensor(
                    cfg.model_name, np.stack(xs), cfg.model_version, cfg.input_name, cfg.output_name
                )
                if logits.shape != (len(xs), len(classes)):
                    raise ClientError(
                        f"got logits {list(logits.shape)} for {len(xs)} images of {len(classes)} classes"
                    )
                out = []
                for row in logits:
                    order, probs = img.softmax_topk(row, cfg.top_k)
                    out.append(([classes[i] for i in order], [float(p) for p in probs], int(order[0])))
                return out

        bar = tqdm(
            total=len(items), unit="img", disable=not cfg.progress, file=sys.stderr, dynamic_ncols=True
        )
        tally: Counter = Counter()

        def on_done(_: int, out: Outcome) -> None:
            tally[out.status] += 1
            bar.update(1)
            if out.status != "ok" or tally["ok"] % 25 == 0:
                bar.set_postfix(ok=tally["ok"], error=tally["error"], skipped=tally["skipped"], refresh=False)

        t0 = time.perf_counter()
        try:
            outcomes = await run_all(
                items,
                prepare,
                send,
                cfg.concurrency,
                cfg.retry,
                on_done,
                cfg.max_rps,
                request_batch=request_batch,
            )
        finally:
            bar.close()
        wall = time.perf_counter() - t0
        after = await asyncio.to_thread(promscrape.scrape_settled, cfg.metrics_url)
    finally:
        await client.close()
    records = [_record(item, out) for item, out in zip(items, outcomes, strict=True)]
    summary = summarize(records, wall, cfg, promscrape.delta(before, after), request_batch)
    return BatchResult(records, summary, classes)


def run_batch(items: list[img.ImageItem], cfg: BatchConfig) -> BatchResult:
    """Synchronous entry point (one event loop per call)."""
    return asyncio.run(run_async(items, cfg))


def write_predictions(records: list[Record], path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for r in records:
            row = {k: v for k, v in asdict(r).items() if k in CSV_FIELDS}
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def write_outputs(result: BatchResult, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", result.summary)
    return {
        "summary": out_dir / "summary.json",
        "predictions": write_predictions(result.records, out_dir / "predictions.csv"),
    }
