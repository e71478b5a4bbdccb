"""What each python step of ``cifar10`` costs at batch 1, and what one fused pipeline model would save.

``python -m benchmarks.python_steps --export-dir artifacts/export --images data/prepared/test_images``

One private ``tritonserver`` serves the fp32 artifact behind three public models side by side:

* ``cifar10``: the served ensemble, ``preprocess -> wrn_fp32 -> postprocess``;
* ``cifar10_no_post``: the same ensemble without its postprocess step (raw logits out, no softmax, no
  counter, no classification-extension top-1): what the postprocess step and the top-1 formatting
  cost together;
* ``cifar10_fused``: one python model that decodes, calls ``wrn_fp32`` through BLS and answers the
  softmax (:mod:`benchmarks.fused_pipeline_model`): the "fewer python hops" design.

Single-image requests to each, and in-process ONNX Runtime batch-1 runs (spinning only during a run,
as the server's), are interleaved in short blocks (:mod:`benchmarks.interleaved`), so the host's
drift cancels; every difference of medians comes with a 95 % interval over rounds. Before measuring,
the fused model must give the ensemble's top-1 on every sample image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import interleaved, reference_stack

HERE = Path(__file__).resolve().parent


def add_variants(repo: Path) -> None:
    """``cifar10_no_post`` and ``cifar10_fused`` beside the built repository's ``cifar10``."""
    from serving.repository import model_configs as mcfg

    ensemble = mcfg.parse((repo / "cifar10" / "config.pbtxt").read_text())
    no_post = mcfg.parse(mcfg.to_text(ensemble))
    no_post.name = "cifar10_no_post"
    del no_post.ensemble_scheduling.step[2]
    no_post.output[0].name, no_post.output[0].label_filename = "logits_out", ""
    classifier = no_post.ensemble_scheduling.step[1]
    classifier.output_map[next(iter(classifier.output_map))] = "logits_out"
    (repo / "cifar10_no_post" / "1").mkdir(parents=True)
    (repo / "cifar10_no_post" / "config.pbtxt").write_text(mcfg.to_text(no_post))

    pre = mcfg.parse((repo / "preprocess" / "config.pbtxt").read_text())
    fused = mcfg.parse((repo / "postprocess" / "config.pbtxt").read_text())
    fused.name, fused.max_batch_size = "cifar10_fused", ensemble.max_batch_size
    del fused.input[:]
    fused.input.add().CopyFrom(pre.input[0])
    fused.ClearField("model_warmup")
    for key in ("mean", "std", "resample", "max_bytes", "max_pixels"):
        fused.parameters[key].string_value = pre.parameters[key].string_value
    fused.parameters["target_version"].string_value = str(classifier.model_version)
    folder = repo / "cifar10_fused"
    (folder / "1").mkdir(parents=True)
    shutil.copy(HERE / "fused_pipeline_model.py", folder / "1" / "model.py")
    shutil.copy(repo / "preprocess" / "1" / "model.py", folder / "1" / "preprocess.py")
    shutil.copy(repo / "postprocess" / "1" / "model.py", folder / "1" / "postprocess.py")
    shutil.copy(repo / "postprocess" / "labels.txt", folder / "labels.txt")
    (folder / "config.pbtxt").write_text(mcfg.to_text(fused))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    reference_stack.add_arguments(p, "reports/bench_python_steps.json")
    p.add_argument("--rounds", type=int, default=24)
    p.add_argument("--block", type=int, default=12, help="calls per arm and round")
    p.add_argument("--discard", type=int, default=2, help="first calls of each block not counted")
    args = p.parse_args()

    from export import onnx_io
    from serving.repository.build import build_repository
    from serving.server.embedded import EmbeddedServer, private_config

    ref = reference_stack.load(args)
    x = reference_stack.tensors(ref)
    sess = onnx_io.session(ref.onnx, None, onnx_io.SPIN_DURING_RUN_ONLY)
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        repo = Path(tmp) / "repo"
        build_repository(reference_stack.spec(ref), repo)
        add_variants(repo)
        with EmbeddedServer(private_config(repo, Path(tmp))) as server:
            server.wait_ready(300)
            make = reference_stack.single_image_calls(server.url_grpc, ref.blobs)
            arms = {
                "onnxruntime": lambda i: sess.run(["logits"], {"input": x[i % len(x)][None]}),
                "ensemble": make("cifar10"),
                "no_postprocess": make("cifar10_no_post", "logits_out", class_count=0),
                "fused": make("cifar10_fused"),
            }
            pairs = [(arms["ensemble"](i)[0][0], arms["fused"](i)[0][0]) for i in range(len(ref.blobs))]
            if any(a.split(b":")[1] != b.split(b":")[1] for a, b in pairs):
                raise SystemExit("the fused model disagrees with the ensemble's top-1; not measuring it")
            lat = interleaved.latency_blocks(arms, args.rounds, args.block, args.discard)
    p50 = {name: round(float(np.median(v)), 3) for name, v in lat.items()}
    out = {
        "p50_ms": p50,
        "ensemble_over_onnxruntime": interleaved.p50_difference(lat["ensemble"], lat["onnxruntime"]),
        "fused_over_onnxruntime": interleaved.p50_difference(lat["fused"], lat["onnxruntime"]),
        "postprocess_step_and_top1": interleaved.p50_difference(lat["ensemble"], lat["no_postprocess"]),
        "fused_minus_ensemble": interleaved.p50_difference(lat["fused"], lat["ensemble"]),
    }
    print(json.dumps(out, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
