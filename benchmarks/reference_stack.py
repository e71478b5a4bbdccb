"""What the serving benchmarks share: the exported model, sample images, and a one-classifier spec.

Every benchmark that starts its own ``tritonserver`` takes the same ``--export-dir``/``--images``/
``--params`` arguments, reads the export manifest the same way and serves the artifact as
``wrn_<precision>`` behind the ``cifar10`` ensemble with ``params.yaml``'s serving settings.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reference:
    """One exported artifact and up to 64 encoded test images to send it."""

    onnx: Path
    precision: str
    manifest: dict
    blobs: list[bytes]
    serving: object  # common.params.ServingConfig


def add_arguments(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--export-dir", type=Path, default=Path("artifacts/export"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, default=Path(out))


def load(args: argparse.Namespace, precision: str = "fp32") -> Reference:
    """The manifest's passed ``precision`` artifact and the images (synthetic ones if none are found)."""
    from client.core import images as img
    from common.params import load_params

    manifest = json.loads((args.export_dir / "manifest.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["precision"] == precision and a["passed"])
    items = img.discover(args.images, limit=64, seed=0) if args.images.is_dir() else img.synthetic(64, 0)
    return Reference(
        onnx=args.export_dir / art["file"],
        precision=precision,
        manifest=manifest,
        blobs=[item.read() for item in items],
        serving=load_params(args.params).serving,
    )


def tensors(ref: Reference):
    """The sample images as the classifier takes them: ``[N, 3, 32, 32]`` float32, normalised."""
    import numpy as np

    from client.core import images as img

    mean, std = tuple(ref.manifest["mean"]), tuple(ref.manifest["std"])
    return np.stack([img.to_tensor(b, mean, std) for b in ref.blobs])


def single_image_calls(grpc_url: str, blobs: list[bytes]):
    """``make(model, output, class_count)``: a function of ``i`` that sends ``blobs[i]`` alone to
    ``model`` over gRPC, as a client of the common image protocol does, and returns ``output``."""
    import tritonclient.grpc as grpcclient

    from client.core.transport import image_batch

    client = grpcclient.InferenceServerClient(grpc_url.removeprefix("grpc://"))

    def make(model: str, output: str = "PROBABILITIES", class_count: int = 1):
        wanted = [grpcclient.InferRequestedOutput(output, class_count=class_count)]

        def call(i: int):
            inp = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
            inp.set_data_from_numpy(image_batch([blobs[i % len(blobs)]]))
            return client.infer(model, [inp], outputs=wanted).as_numpy(output)

        return call

    return make


def spec(ref: Reference, versions: tuple[int, ...] = (1,), production: int = 1, **kw):
    """``wrn_<precision>`` serving ``versions`` (all the same file) behind the ``cifar10`` ensemble."""
    from serving.repository.spec import RepositorySpec, ServedModel, ServedVersion

    name, serving = f"wrn_{ref.precision}", ref.serving
    model = ServedModel(
        name,
        "onnxruntime",
        tuple(ServedVersion(v, ref.onnx) for v in versions),
        production,
        max_batch_size=ref.manifest["io"]["max_batch"],
        preferred_batch_sizes=serving.preferred_batch_sizes,
        max_queue_delay_us=serving.max_queue_delay_us,
    )
    return RepositorySpec(
        classifiers=(model,),
        ensemble_target=name,
        classes=tuple(ref.manifest["classes"]),
        mean=tuple(ref.manifest["mean"]),
        std=tuple(ref.manifest["std"]),
        preprocess_max_batch=serving.preprocess_max_batch,
        postprocess_max_batch=serving.postprocess_max_batch,
        python_queue_delay_us=serving.python_queue_delay_us,
        **kw,
    )
