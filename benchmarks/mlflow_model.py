"""A registered version as an MLflow Model: its pyfunc against Triton and ONNX Runtime, and what
registering and migrating cost. Three parts, each printed as JSON, measured side by side in one run::

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python -m benchmarks.mlflow_model \
        --export-dir artifacts/export --images data/prepared/test_images --out reports/mlflow_model.json

* ``timing``: ``registry register`` of the export's forms (registered from their logged models), and
  ``registry migrate`` of an fp32 version registered the old way (the run's files), in seconds.
* ``throughput``: images/s of ``mlflow.pyfunc.load_model(...).predict`` on encoded PNG/JPEG
  against in-process ONNX Runtime on the same file, fed the same images decoded by the same decoder
  (decode + ORT) and pre-decoded (ORT alone), in rotating rounds, with per-round ratios.
* ``agreement``: the pyfunc's top-1 against the served ``cifar10`` ensemble (a real ``tritonserver``
  synced from the registry) on every image under ``--images``; a disagreement counts as a near-tie
  when the pyfunc's two best logits lie within the fp32 tolerance the export promises.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd


def timing(export_dir: Path, prefix: str) -> dict:
    from benchmarks.onnx_variants import register_run_files
    from common.export_manifest import ExportManifest
    from common.params import RegistryConfig, ServingConfig
    from registry import store
    from registry.migrate import migrate

    cfg = RegistryConfig(model_prefix=prefix)
    t0 = time.perf_counter()
    rows = store.register_manifest(export_dir / "manifest.json", cfg)
    registered = time.perf_counter() - t0
    copy = Path(tempfile.mkdtemp()) / "export"
    shutil.copytree(export_dir, copy)
    old_cfg = RegistryConfig(model_prefix=f"{prefix}-old")
    old = register_run_files(copy / "manifest.json", old_cfg)
    t0 = time.perf_counter()
    migrated = migrate(old_cfg.registered_name("fp32"), old, copy / "cache", None, ServingConfig())
    migrating = time.perf_counter() - t0
    manifest = ExportManifest.read(export_dir / "manifest.json")
    return {
        "register_s": round(registered, 2),
        "registered": rows,
        "migrate_fp32_s": round(migrating, 2),
        "migrated": migrated.status,
        "forms": [a.precision for a in manifest.passed],
    }


def throughput(uri: str, blobs: list[bytes], rounds: int, batch: int) -> dict:
    import mlflow
    import onnxruntime as ort
    from image_decoding import Decoder

    from benchmarks.interleaved import ratio_summary, throughput_rounds

    model = mlflow.pyfunc.load_model(uri)
    facts = model.metadata.metadata["cifar10"]
    local = Path(mlflow.artifacts.download_artifacts(uri)) / facts["file"]
    session = ort.InferenceSession(str(local), providers=["CPUExecutionProvider"])
    decoder = Decoder(tuple(facts["mean"]), tuple(facts["std"]), (32, 32))
    frames = [pd.DataFrame({"image": blobs[i : i + batch]}) for i in range(0, len(blobs), batch)]
    arrays = [np.asarray(f["image"].tolist(), dtype=object).reshape(-1, 1) for f in frames]
    tensors = [decoder.batch(a) for a in arrays]

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for i in range(len(frames)):
            fn(i)
        return len(blobs) / (time.perf_counter() - t0)

    arms = {
        "pyfunc": lambda: timed(lambda i: model.predict(frames[i])),
        "decode_ort": lambda: timed(lambda i: session.run(None, {"input": decoder.batch(arrays[i])})),
        "ort": lambda: timed(lambda i: session.run(None, {"input": tensors[i]})),
    }
    timed(lambda i: model.predict(frames[i]))  # warm both
    figures = throughput_rounds(arms, rounds)
    return {
        "images": len(blobs),
        "batch": batch,
        "img_per_s": {k: float(np.median(v)) for k, v in figures.items()},
        "pyfunc_over_decode_ort": ratio_summary(figures["pyfunc"], figures["decode_ort"]),
        "pyfunc_over_ort": ratio_summary(figures["pyfunc"], figures["ort"]),
    }


def agreement(uri: str, params, files: list[Path], tolerance: float, workdir: Path) -> dict:
    import mlflow
    import tritonclient.grpc as grpcclient

    from client.core.transport import image_batch
    from registry.sync import sync
    from serving.server.embedded import EmbeddedServer, private_config

    model = mlflow.pyfunc.load_model(uri)
    blobs = [p.read_bytes() for p in files]
    out = model.predict(pd.DataFrame({"image": blobs}))
    probabilities = np.stack(out["probabilities"]).astype(np.float64)
    sync(params, workdir / "repo", workdir / "cache")
    served = []
    with EmbeddedServer(private_config(workdir / "repo", workdir)) as server:
        client = grpcclient.InferenceServerClient(server.url_grpc.removeprefix("grpc://"))
        for i in range(0, len(blobs), 16):
            chunk = blobs[i : i + 16]
            inp = grpcclient.InferInput("IMAGE", [len(chunk), 1], "BYTES")
            inp.set_data_from_numpy(image_batch(chunk))
            answer = client.infer(
                "cifar10", [inp], outputs=[grpcclient.InferRequestedOutput("PROBABILITIES")]
            )
            served.append(answer.as_numpy("PROBABILITIES"))
    served_top1 = np.concatenate(served).argmax(1)
    logp = np.log(np.clip(probabilities, 1e-30, None))
    top2 = np.sort(logp, axis=1)[:, -2:]
    near_tie = (top2[:, 1] - top2[:, 0]) <= tolerance
    differ = served_top1 != out["class_index"].to_numpy()
    return {
        "images": len(blobs),
        "top1_equal": int((~differ).sum()),
        "differ": int(differ.sum()),
        "differ_near_ties": int((differ & near_tie).sum()),
        "differ_beyond_tolerance": int((differ & ~near_tie).sum()),
        "fp32_tolerance": tolerance,
    }


def main() -> None:
    import sys

    from common.params import RegistryConfig, load_params
    from mlmodel.package import code_files
    from registry import aliases, store

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--throughput-images", type=int, default=512)
    p.add_argument("--out", type=Path, default=Path("reports/mlflow_model.json"))
    p.add_argument("--parts", default="timing,throughput,agreement", help="comma-separated, in this order")
    args = p.parse_args()
    sys.path.insert(0, str(Path(code_files()[1]).parent))  # image_decoding, as the pyfunc imports it
    parts = set(args.parts.split(","))
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    report = {}
    if "timing" in parts:
        report["timing"] = timing(args.export_dir, prefix)
        print(json.dumps(report["timing"], indent=1), flush=True)
    else:
        store.register_manifest(args.export_dir / "manifest.json", RegistryConfig(model_prefix=prefix))
    params = load_params(args.params)
    cfg = params.registry.replace(model_prefix=prefix, serve=("fp32",), ensemble_target="fp32")
    name = cfg.registered_name("fp32")
    aliases.promote(name, "production", aliases.resolve(name, version=1).version)
    uri = f"models:/{name}@production"
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if "throughput" in parts:
        rng = np.random.default_rng(0)
        picks = rng.choice(len(files), args.throughput_images, replace=False)
        report["throughput"] = throughput(
            uri, [files[i].read_bytes() for i in picks], args.rounds, args.batch
        )
        print(json.dumps(report["throughput"], indent=1), flush=True)
    if "agreement" in parts:
        tolerance = params.export.tolerances["fp32"].max_abs_logit
        with tempfile.TemporaryDirectory() as tmp:
            report["agreement"] = agreement(uri, params.replace(registry=cfg), files, tolerance, Path(tmp))
        print(json.dumps(report["agreement"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
