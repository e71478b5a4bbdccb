"""Side-by-side CPU benchmark of one set of weights: PyTorch vs ONNX Runtime fp32 / fp16 / int8.

Every number comes from the same process on the same machine, so the ratios are meaningful even
where absolute figures are not. Usage::

    python -m benchmarks.export_runtimes --export-dir artifacts/export \\
        --checkpoint artifacts/train/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common.params import DataConfig, load_params
from export import onnx_io
from training.augment import normalize_batch
from training.checkpoint import load_model


def _throughput(fn, x: np.ndarray, batch: int, min_seconds: float) -> float:
    """Images/s of ``fn`` on batches of ``batch`` images, after one warm-up call."""
    xb = x[:batch]
    fn(xb)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or n == 0:
        fn(xb)
        n += batch
    return n / (time.perf_counter() - start)


def _accuracy(fn, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    pred = np.concatenate([fn(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float(np.mean(pred == y))


def run(
    checkpoint: Path,
    export_dir: Path,
    prepared: Path,
    data: DataConfig,
    limit: int,
    batches: tuple[int, ...],
    min_seconds: float,
    threads: int,
) -> dict:
    torch.set_num_threads(threads)
    model = load_model(checkpoint)
    images, labels = np.load(prepared / "test_x.npy")[:limit], np.load(prepared / "test_y.npy")[:limit]
    x = normalize_batch(images, data).numpy()

    def torch_fn(b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(b)).numpy()

    runners = {"pytorch_fp32": torch_fn}
    manifest = json.loads((export_dir / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["passed"] and art["format"] == "onnx":
            sess = onnx_io.session(export_dir / art["file"], threads)
            runners[f"onnxruntime_{art['precision']}"] = lambda b, s=sess: s.run(["logits"], {"input": b})[0]
    rows = {}
    for name, fn in runners.items():
        row = {f"batch{b}_img_s": _throughput(fn, x, b, min_seconds) for b in batches}
        row["accuracy"] = _accuracy(fn, x, labels)
        rows[name] = row
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    base = rows["pytorch_fp32"]
    for row in rows.values():
        for b in batches:
            row[f"batch{b}_vs_pytorch"] = row[f"batch{b}_img_s"] / base[f"batch{b}_img_s"]
    return {"images": len(labels), "threads": threads, "results": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("artifacts/train/model.safetensors"))
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--data", type=Path, default=Path("data/prepared"))
    p.add_argument("--limit", type=int, default=5000, help="test images for the accuracy column")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--min-seconds", type=float, default=5.0, help="timed duration per cell")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    result = run(
        args.checkpoint,
        args.export_dir,
        args.data,
        load_params().data,
        args.limit,
        tuple(int(b) for b in args.batches.split(",")),
        args.min_seconds,
        args.threads,
    )
    from rich.console import Console
    from rich.table import Table

    batches = [int(b) for b in args.batches.split(",")]
    table = Table(
        title=f"{args.checkpoint.name}: CPU, {result['threads']} threads, {result['images']} test images"
    )
    for col in [
        "runtime",
        *[f"b{b} img/s" for b in batches],
        *[f"b{b} ×PyTorch" for b in batches],
        "accuracy",
    ]:
        table.add_column(col, justify="right", no_wrap=True)
    for name, row in result["results"].items():
        table.add_row(
            name,
            *[f"{row[f'batch{b}_img_s']:.1f}" for b in batches],
            *[f"{row[f'batch{b}_vs_pytorch']:.2f}" for b in batches],
            f"{row['accuracy']:.2%}",
        )
    Console(width=160).print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
