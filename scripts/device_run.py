"""The `gpu` profile on a lent GPU, in one call: prepare, train on a time budget, evaluate, export, pack.

On the device machine (no MLflow, no DVC, no network), from the repository root::

    CIFAR10_GIT_COMMIT=<sha> PYTHONUNBUFFERED=1 python -m scripts.device_run \\
        --mirror carry/cifar10-jpeg.tar.gz --out "$OUT" --minutes 6 [--set train.lr=0.6 ...]

``CIFAR10_GIT_COMMIT`` (the output of ``git rev-parse HEAD`` where the command is prepared) is
the commit the run records: the copy of the tree on the device machine has no ``.git``.

1. **prepare** the carried mirror (the pipeline's own prepare stage);
2. **train** the `gpu` profile with ``train.max_minutes`` = ``--minutes``: the cosine ends when the
   budget does, and the run is recorded in a run folder (:mod:`common.run_folder`), which
   ``cifar10 registry import-run`` replays into MLflow on the CPU side with its timing;
3. **evaluate** on the test split with and without flip TTA;
4. **export** ONNX fp32 and check its parity against PyTorch (the export's own tolerance);
5. **pack** the weights (int8 per channel, fp16 scales, parts of 15 MB with SHA-256s) and score the
   unpacked weights on the test split, so the cost of the packing is measured;
6. write into ``--out`` (at most 8 files, each < 16 MB): the pack parts, ``pack.json``,
   ``report.json`` (everything measured), ``curve.png`` (validation accuracy against wall time) and
   ``run.tar.gz`` (the run folder, without the weights, which travel as the pack).

The same script runs on the CPU with tiny settings in the tests (``--set model.depth=10 ...``).
"""

from __future__ import annotations

import argparse
import json
import platform
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from common.params import Params, load_params, with_overrides


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    minutes = [h["elapsed_s"] / 60 for h in history]
    ax.plot(minutes, [100 * h["val_acc"] for h in history], marker="o", ms=3)
    ax.set(xlabel="training wall time (min)", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _test_accuracy(weights: Path, params: Params, prepared: Path, device: torch.device) -> dict[str, float]:
    from training.checkpoint import load_model
    from training.engine import predict_logits

    model = load_model(weights, params.model.depth, params.model.width, len(params.data.classes)).to(device)
    x, y = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    out = {}
    for name, tta in (("plain", False), ("tta_flip", True)):
        logits = predict_logits(model, x, params.data, device, params.train.eval_batch_size, tta_flip=tta)
        out[name] = float((logits.argmax(1) == y).mean())
    return out


def _parity(weights: Path, params: Params, prepared: Path, work: Path) -> dict:
    from export import onnx_io
    from export.parity import compare
    from export.stage import parity_rows
    from training.augment import normalize_batch
    from training.checkpoint import load_model
    from training.engine import predict_logits

    model = load_model(weights, params.model.depth, params.model.width, len(params.data.classes))
    val_x, val_y = np.load(prepared / "val_x.npy"), np.load(prepared / "val_y.npy")
    pick = parity_rows(val_y, params.export.parity_images)
    reference = predict_logits(model, val_x[pick], params.data, torch.device("cpu"), 250)
    onnx = onnx_io.export_fp32(model, work / "model.fp32.onnx", params.export.opset, params.export.max_batch)
    logits = onnx_io.run_onnx(onnx, normalize_batch(val_x[pick], params.data).numpy())
    result = compare("fp32", reference, logits, val_y[pick], params.export.tolerances["fp32"])
    return result.model_dump() | {"onnx_bytes": onnx.stat().st_size}


def run(params: Params, mirror: Path, out: Path, work: Path, show_progress: bool = False) -> dict:
    """Every step above; returns the report (also ``out/report.json``)."""
    from training.prepare import prepare
    from training.train import train
    from training.weight_pack import pack, unpack

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    times: dict[str, float] = {}
    t = time.perf_counter()
    prepared = work / "prepared"
    prepare(params.data.replace(source=str(mirror)), prepared, work / "raw")
    times["prepare_s"] = time.perf_counter() - t

    t = time.perf_counter()
    weights = work / "model.safetensors"
    summary = train(
        params,
        prepared,
        weights,
        work / "checkpoint",
        work / "train_log.csv",
        work / "run.json",
        show_progress=show_progress,
        run_folder=work / "run",
    )
    times["train_stage_s"] = time.perf_counter() - t
    history = json.loads((work / "checkpoint" / "state.json").read_text())["history"]

    t = time.perf_counter()
    accuracy = _test_accuracy(weights, params, prepared, device)
    times["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    parity = _parity(weights, params, prepared, work)
    times["export_parity_s"] = time.perf_counter() - t

    t = time.perf_counter()
    record = pack(weights, out)
    unpacked = unpack(out, work / "unpacked.safetensors")
    packed_accuracy = _test_accuracy(unpacked, params, prepared, device)
    times["pack_s"] = time.perf_counter() - t

    _curve(history, out / "curve.png", f"{_device_name()}: WRN-{params.model.depth}-{params.model.width}")
    with tarfile.open(out / "run.tar.gz", "w:gz") as tar:  # the weights travel as the pack, not here
        tar.add(work / "run", arcname="run", filter=lambda m: None if "/artifacts/model" in m.name else m)
    report = {
        "device": _device_name(),
        "torch": torch.__version__,
        "profile": params.profile,
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "train_seconds": summary.get("train_seconds"),
        "epochs_run": len(history),
        "images_per_s": summary.get("mean_images_per_s"),
        "curve": [{"elapsed_s": round(h["elapsed_s"], 1), "val_acc": h["val_acc"]} for h in history],
        "test_accuracy": accuracy,
        "test_accuracy_packed": packed_accuracy,
        "packing_cost_points": {k: round(100 * (accuracy[k] - packed_accuracy[k]), 3) for k in accuracy},
        "onnx_fp32_parity": parity,
        "pack": {"bytes": record["bytes"], "parts": len(record["parts"]), "sha256": record["sha256"]},
        "phases_s": {k: round(v, 1) for k, v in times.items()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirror", type=Path, required=True, help="the CIFAR-10 mirror archive (carried)")
    p.add_argument("--out", type=Path, required=True, help="what comes back ($OUT on the device)")
    p.add_argument("--work", type=Path, default=Path("/tmp/cifar10-device"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--profile", default="gpu")
    p.add_argument("--minutes", type=float, default=6.0, help="training budget (train.max_minutes)")
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting"
    )
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    params = with_overrides(
        load_params(args.params, args.profile), [f"train.max_minutes={args.minutes}", *args.set]
    )
    report = run(params, args.mirror, args.out, args.work, args.progress)
    keys = ("device", "train_seconds", "epochs_run", "images_per_s", "test_accuracy", "test_accuracy_packed")
    print(json.dumps({k: report[k] for k in (*keys, "phases_s")}, indent=2))


if __name__ == "__main__":
    main()
