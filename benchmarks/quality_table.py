"""Corruption x severity -> true accuracy, the served estimate and its interval, drift, alert.

Everything goes through a real ``tritonserver`` and the public ``cifar10`` endpoint: the weights are
exported by the export stage (its quality reference calibrated on one half of the test split, the
scored rows), served with that reference, and sent the other half's images, clean and corrupted six
ways at three severities (:mod:`training.corruptions`, encoded like the source files). For each set,
the change of Triton's counters over the set is read the way ``cifar10 monitor status`` reads them
(:mod:`monitoring.quality_status`, the arithmetic of ``rules/quality.yml``): the estimate, its
interval, every input statistic's PSI, and whether an alert condition holds. The true accuracy comes
from the answers the client got::

    python -m benchmarks.quality_table --prepared data/prepared \
        --weights wrn28_10_cifar10_jpeg.fp16.safetensors --precision int8 --images 500

Prints a markdown table and the mean absolute error of the served estimate and of plain ATC.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.params import DataConfig, ExportConfig, MonitoringConfig
from common.scored_split import accuracy_rows, balanced_subset
from monitoring import quality_status
from training.corruptions import KINDS, SEVERITIES, corrupt, encoding_of


def _export(weights: Path, prepared: Path, precision: str, calibration: int, out: Path):
    from export.stage import export_model

    cfg = ExportConfig(
        precisions=("fp32", precision) if precision != "fp32" else ("fp32",), accuracy_images=calibration
    )
    held_out = MonitoringConfig(reference_split="test", reference_images=calibration)
    # A measurement, not a registration: the export logs into a private MLflow store under ``out``.
    old_uri, old_cwd = os.environ.get("MLFLOW_TRACKING_URI"), Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{out.parent / 'mlflow.db'}"
    os.chdir(out.parent)
    try:
        manifest = export_model(
            weights.resolve(), prepared.resolve(), DataConfig(), cfg, out, monitoring=held_out
        )
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri
    art = next(a for a in manifest.artifacts if a.precision == precision and a.passed)
    return out / art.file, out / art.quality_reference


def _serve(onnx: Path, reference: Path, workdir: Path):
    from serving.repository.build import build_repository
    from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion
    from serving.server.embedded import EmbeddedServer, ServerConfig, free_ports

    model = ServedModel("wrn", "onnxruntime", (ServedVersion(1, onnx, reference),), 1, 256)
    d = DataConfig()
    spec = RepositorySpec((model,), "wrn", d.classes, d.mean, d.std, metrics_flush_s=0.2)
    build_repository(spec, workdir / "repo")
    http, grpc, metrics = free_ports(3)
    config = ServerConfig(
        workdir / "repo", http, grpc, metrics, log_file=workdir / "triton.log", exit_timeout_s=3
    )
    return EmbeddedServer(config).start().wait_ready(300)


def _send(server, files: list[bytes], batch: int = 16) -> np.ndarray:
    import tritonclient.http as httpclient

    from client.core.transport import image_batch

    client = httpclient.InferenceServerClient(server.http_endpoint)
    answers = []
    try:
        for i in range(0, len(files), batch):
            chunk = image_batch(files[i : i + batch])
            tensor = httpclient.InferInput("IMAGE", list(chunk.shape), "BYTES")
            tensor.set_data_from_numpy(chunk)
            result = client.infer(
                "cifar10", [tensor], outputs=[httpclient.InferRequestedOutput("PROBABILITIES")]
            )
            answers.append(result.as_numpy("PROBABILITIES").argmax(1))
    finally:
        client.close()
    return np.concatenate(answers)


def _settled(server, want: float) -> quality_status.Samples:
    deadline = time.monotonic() + 10
    while True:
        samples = quality_status.scrape(server.url_metrics)
        if sum(samples.get("quality_prediction_total", {}).get(("wrn", "1"), {}).values()) >= want:
            return samples
        if time.monotonic() > deadline:
            raise RuntimeError("the quality counters did not catch up with the traffic")
        time.sleep(0.2)


def run(prepared: Path, weights: Path, precision: str, images: int, seed: int, workdir: Path) -> list[dict]:
    test_y = np.load(prepared / "test_y.npy")
    calibration = len(test_y) // 2
    scored = set(accuracy_rows(test_y, calibration).tolist())
    files = sorted(p for p in (prepared / "test_images").rglob("*") if p.is_file())
    test_x = np.load(prepared / "test_x.npy")
    rest = np.array([i for i in range(len(test_y)) if i not in scored])
    # class-balanced, like the reference's label mix: then the class-mix bound is a true upper bound
    rows = np.sort(rest[balanced_subset(test_y[rest], images, seed=seed)])
    clean = [files[i].read_bytes() for i in rows]
    encoding = encoding_of(clean)
    onnx, reference = _export(weights, prepared, precision, calibration, workdir / "export")
    server = _serve(onnx, reference, workdir)
    cfg = MonitoringConfig()
    sets = [("clean", "-", clean)] + [
        (k, s, corrupt(test_x[rows], k, s, seed, encoding)) for k in KINDS for s in SEVERITIES
    ]
    out, counted = [], 0.0
    try:
        before = _settled(server, 0)
        for kind, severity, blobs in sets:
            answers = _send(server, blobs)
            counted += len(blobs)
            after = _settled(server, counted)
            (row,) = quality_status.status(quality_status.delta(before, after), cfg)
            before = after
            worst = max(row.drift, key=lambda d: d.psi or 0.0)
            out.append(
                {
                    "set": kind,
                    "severity": severity,
                    "images": len(blobs),
                    "true": float(np.mean(answers == test_y[rows])),
                    "estimate": row.estimate,
                    "interval": row.interval,
                    "atc": row.atc,
                    "class_mix_bound": row.class_mix_bound,
                    "reference": row.reference_accuracy,
                    "drift": worst.psi,
                    "drift_statistic": worst.statistic,
                    "alert": row.alerting(cfg),
                    "accuracy_alert": row.accuracy_low(cfg),
                    "reliable": row.reliable(cfg),
                }
            )
            print(
                f"{kind}-{severity}: true {out[-1]['true']:.3f} estimate {row.estimate:.3f}", file=sys.stderr
            )
    finally:
        server.stop(grace=10)
    return out


def render(rows: list[dict]) -> str:
    lines = [
        "| corruption | severity | true | estimate [interval] | ATC | class-mix bound "
        "| drift PSI (statistic) | alert |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        low, high = r["interval"]
        alert = ("accuracy + drift" if r["accuracy_alert"] else "drift") if r["alert"] else "no"
        if r["accuracy_alert"] and r["reliable"]:
            alert = "accuracy"
        lines.append(
            f"| {r['set']} | {r['severity']} | {100 * r['true']:.1f} | {100 * r['estimate']:.1f} "
            f"[{100 * low:.1f}, {100 * high:.1f}] | {100 * r['atc']:.1f} | "
            f"{100 * r['class_mix_bound']:.1f} | {r['drift']:.2f} ({r['drift_statistic']}) | {alert} |"
        )
    shifted = [r for r in rows if r["set"] != "clean"]

    def mae(key: str, rs: list[dict]) -> float:
        return 100 * float(np.mean([abs(r[key] - r["true"]) for r in rs])) if rs else float("nan")

    reliable = [r for r in shifted if r["reliable"]]
    lines += [
        "",
        f"mean absolute error over the {len(shifted)} shifted sets: served estimate "
        f"{mae('estimate', shifted):.2f} points, plain ATC {mae('atc', shifted):.2f} points",
        f"sets the estimate calls reliable (no input statistic drifts): {len(reliable)}; "
        f"their MAE {mae('estimate', reliable):.2f} points",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality_table", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--precision", default="int8", choices=("fp32", "fp16", "int8"))
    parser.add_argument("--images", type=int, default=500, help="images per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="quality-table-") as tmp:
        rows = run(args.prepared, args.weights, args.precision, args.images, args.seed, Path(tmp))
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
