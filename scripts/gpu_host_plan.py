"""Build, check and register a TensorRT plan on the GPU host, inside the NGC image that serves it.

``python -m scripts.gpu_host_plan [--version N] [--gpu 0] [--dry-run]`` (on the GPU host, beside
the compose stack, with MLFLOW_TRACKING_URI pointing at its MLflow):

1. resolves the registered fp32 ONNX (``production`` unless ``--version``) and verifies its hash;
2. ``trtexec`` in the image ``compose.yaml`` pins (``docker/triton.Dockerfile``'s ``FROM``) builds an
   FP16 plan with one profile over batch 1..``export.max_batch`` (:mod:`export.trtexec`);
3. the same image runs the plan on the export's parity images and on its test images; the logits
   are compared with ONNX Runtime's fp32 logits under ``export.tolerances.trt_fp16``;
4. a plan that passes is logged to the fp32 version's run and registered as
   ``<prefix>-trt_fp16`` with what built it (``trt_version``, ``trt_compute_capability``,
   ``trt_cuda``, ``trt_profile``), which ``sync`` checks against the serving host.

``--dry-run`` prints the ``docker run ... trtexec`` command lines and runs nothing: what a reviewer
(and the tests) check. Not run in this workplace: it has no GPU, no Docker and no TensorRT.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np

from common.params import Params, load_params
from export import trtexec

PLAN = "model.plan"


def _images(prepared: Path, params: Params) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The export's own parity (validation) and accuracy (test) rows, normalised."""
    from export.stage import accuracy_rows, parity_rows
    from training.augment import normalize_batch

    val_x, val_y = np.load(prepared / "val_x.npy"), np.load(prepared / "val_y.npy")
    test_x, test_y = np.load(prepared / "test_x.npy", mmap_mode="r"), np.load(prepared / "test_y.npy")
    parity = parity_rows(val_y, params.export.parity_images)
    test = accuracy_rows(test_y, params.export.accuracy_images)
    return {
        "parity": (normalize_batch(val_x[parity], params.data).numpy(), val_y[parity]),
        "test": (normalize_batch(np.asarray(test_x[test]), params.data).numpy(), test_y[test]),
    }


def plan_commands(
    box: trtexec.Container, chunks: dict[str, list[tuple[str, int]]], max_batch: int
) -> list[list[str]]:
    """Every command the run needs, in order: one build, then one inference per input chunk."""
    commands = [trtexec.build_command(box, "model.onnx", PLAN, max_batch, workspace_mib=1024)]
    for items in chunks.values():
        for name, batch in items:
            commands.append(trtexec.infer_command(box, PLAN, batch, name, name.replace(".bin", ".json")))
    return commands


def run(params: Params, args: argparse.Namespace) -> dict:
    from export.onnx_io import run_onnx
    from export.parity import compare
    from registry import aliases, plan_compat, store
    from registry.version_fetch import fetch_artifact

    cfg = params.registry
    name = cfg.registered_name("fp32")
    info = (
        aliases.resolve(name, version=args.version) if args.version else aliases.resolve(name, "production")
    )
    onnx = fetch_artifact(name, info.version, args.cache)
    image, tag = plan_compat.pinned_image(args.compose) if args.image is None else (args.image, "")
    cuda = plan_compat.NGC_TRITON.get(tag, ("", ""))[1]
    work = args.workdir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx, work / "model.onnx")
    max_batch = int(info.tags.get("max_batch") or params.export.max_batch)
    images = _images(args.prepared, params)
    chunks = {split: trtexec.write_chunks(x, work, split, max_batch) for split, (x, _) in images.items()}
    box = trtexec.Container(image=image, host_dir=work, gpu=args.gpu, trtexec=args.trtexec)
    commands = plan_commands(box, chunks, max_batch)
    if args.dry_run:
        return {"version": info.version, "image": image, "commands": [shlex.join(c) for c in commands]}
    build = subprocess.run(commands[0], capture_output=True, text=True, check=False)
    (work / "build.log").write_text(build.stdout + build.stderr)
    if build.returncode != 0:
        raise SystemExit(f"trtexec could not build the plan (see {work / 'build.log'})")
    facts = trtexec.build_facts(build.stdout + build.stderr, max_batch, cuda)
    for command in commands[1:]:
        subprocess.run(command, capture_output=True, text=True, check=True)
    classes = len(params.data.classes)
    logits = {
        split: np.concatenate(
            [trtexec.read_output(work / n.replace(".bin", ".json"), b, classes) for n, b in items]
        )
        for split, items in chunks.items()
    }
    x, labels = images["parity"]
    result = compare(
        "trt_fp16", run_onnx(onnx, x), logits["parity"], labels, params.export.tolerances["trt_fp16"]
    )
    test_y = images["test"][1]
    accuracy = float(np.mean(logits["test"].argmax(1) == test_y))
    print(
        f"parity {'passed' if result.passed else 'FAILED'}: {result.model_dump()}; "
        f"test accuracy {accuracy:.4f}"
    )
    if not result.passed:
        raise SystemExit("the plan failed its parity gate: not registered")
    import mlflow

    run_id = info.tags["run_id"]
    manifest = mlflow.artifacts.load_dict(f"runs:/{run_id}/export/manifest.json")
    shutil.copyfile(work / PLAN, work / "model.trt_fp16.plan")
    mlflow.tracking.MlflowClient().log_artifact(run_id, str(work / "model.trt_fp16.plan"), "export/trt_fp16")
    from common.fsutil import sha256_file

    manifest["artifacts"] = [
        {
            "precision": "trt_fp16",
            "file": "model.trt_fp16.plan",
            "format": "tensorrt_plan",
            "sha256": sha256_file(work / "model.trt_fp16.plan"),
            "passed": True,
            "parity": result.model_dump(),
            "test": {
                "accuracy": accuracy,
                "images": len(test_y),
                "runtime": f"TensorRT {facts['trt_version']}",
                "split": "test",
            },
            "built_on": facts,
        }
    ]
    manifest["command"] = shlex.join(commands[0])
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    rows = store.register_manifest(work / "manifest.json", cfg)
    return {"built_on": facts, "parity": result.model_dump(), "test_accuracy": accuracy, "registered": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument(
        "--version", type=int, default=None, help="fp32 version to build from (default: production)"
    )
    p.add_argument(
        "--compose", type=Path, default=Path("compose.yaml"), help="where the serving image is pinned"
    )
    p.add_argument("--image", default=None, help="run trtexec in this image instead of the pinned one")
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--trtexec", default=trtexec.TRTEXEC, help="trtexec's path inside the image")
    p.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    p.add_argument("--cache", type=Path, default=Path("artifacts/cache"))
    p.add_argument("--workdir", type=Path, default=Path("artifacts/trt_plan"))
    p.add_argument("--dry-run", action="store_true", help="print the docker/trtexec command lines only")
    args = p.parse_args(argv)
    print(json.dumps(run(load_params(args.params), args), indent=2))


if __name__ == "__main__":
    main()
