"""The ``export`` stage: every precision exported, checked against PyTorch, and recorded.

Everything is built in a temporary folder and swapped in at the end, so a crash never leaves a
half-written artifact. Artifacts that fail their gate go to ``rejected/`` with the reason in the
manifest; the registry only ever reads artifacts the manifest marks as passed. Every artifact that
passes is then measured on the test split through its own runtime (ONNX Runtime for the ONNX files,
TensorRT for the plan): that figure, not the training run's PyTorch one, is what the registry tags
the version with.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import torch

from common import scored_split, tracking
from common.exit_codes import Failed
from common.export_manifest import Architecture, Artifact, ExportManifest, Io, Measured, Source
from common.fsutil import atomic_dir, sha256_file
from common.params import DataConfig, ExportConfig, MonitoringConfig, ServingConfig
from common.scored_split import accuracy_rows  # noqa: F401 - re-exported for the tests
from export import onnx_io, quality, tensorrt_engine
from export.onnx_io import INPUT_NAME, OUTPUT_NAME
from export.parity import ParityResult, compare, render_table
from export.quantize import quantize_int8
from monitoring.quality_reference import FILE_NAME
from training.augment import balanced_subset, normalize_batch
from training.checkpoint import load_model, read_metadata
from training.engine import predict_logits

log = logging.getLogger(__name__)
FILES = {
    "fp32": "model.fp32.onnx",
    "fp16": "model.fp16.onnx",
    "int8": "model.int8.onnx",
    "trt_fp16": "model.plan",
}


class ExportError(Failed):
    """A required artifact failed its parity gate (the report says which bound): exit code 1."""


def _source_info(weights: Path, run_file: Path | None) -> dict:
    run_id = None
    if run_file is not None and run_file.exists():
        run_id = json.loads(run_file.read_text()).get("run_id")
    lock = Path("dvc.lock")
    return {
        "weights": str(weights.resolve()),
        "sha256": sha256_file(weights),
        "run_id": run_id,
        "git_commit": tracking.git_commit(),
        "dvc_lock": sha256_file(lock) if lock.is_file() else None,
    }


def export_model(
    weights: Path,
    prepared: Path,
    data: DataConfig,
    cfg: ExportConfig,
    out_dir: Path,
    run_file: Path | None = None,
    command: str = "",
    depth: int | None = None,
    width: int | None = None,
    experiment: str = "cifar10-wrn",
    monitoring: MonitoringConfig | None = None,
    serving: ServingConfig | None = None,
) -> ExportManifest:
    """Export ``weights`` in every configured precision into ``out_dir``; returns the manifest.

    Each artifact that passes also gets its quality reference (:mod:`export.quality`), calibrated
    on ``monitoring.reference_split`` (``params.yaml``'s ``monitoring`` section when not given).
    """
    monitoring = monitoring or MonitoringConfig()
    serving = serving or ServingConfig()  # the decoder limits each form's pyfunc applies
    model = load_model(weights, depth, width, len(data.classes))
    meta = read_metadata(weights) if weights.suffix == ".safetensors" else {}
    classes = json.loads(meta["classes"]) if "classes" in meta else list(data.classes)
    if classes != list(data.classes):
        raise ExportError(
            f"{weights} was trained for classes {classes}, params.yaml has {list(data.classes)}"
        )
    val_x, val_y = np.load(prepared / "val_x.npy"), np.load(prepared / "val_y.npy")
    pick = parity_rows(val_y, cfg.parity_images)
    images, labels = val_x[pick], val_y[pick]
    x = normalize_batch(images, data).numpy()
    reference = predict_logits(model, images, data, torch.device("cpu"), batch_size=250)
    source = _source_info(weights, run_file)
    results: dict[str, ParityResult] = {}
    skipped: dict[str, str] = {}

    with atomic_dir(out_dir) as tmp:
        fp32 = onnx_io.export_fp32(model, tmp / FILES["fp32"], cfg.opset, cfg.max_batch)
        builders = {
            "fp32": lambda p: p,
            "fp16": lambda p: onnx_io.convert_fp16(fp32, p),
            "int8": lambda p: quantize_int8(fp32, p, _calibration(prepared, data, cfg.calibration_images)),
        }
        for precision in cfg.precisions:
            path = builders[precision](tmp / FILES[precision])
            results[precision] = compare(
                precision, reference, onnx_io.run_onnx(path, x), labels, cfg.tolerances[precision]
            )
        reason = tensorrt_engine.availability()
        if reason is None:
            plan = tensorrt_engine.build_plan(fp32, tmp / FILES["trt_fp16"], cfg.max_batch)
            results["trt_fp16"] = compare(
                "trt_fp16",
                reference,
                tensorrt_engine.run_plan(plan, x, cfg.max_batch),
                labels,
                cfg.tolerances["trt_fp16"],
            )
        else:
            log.info(reason)
            skipped["trt_fp16"] = reason

        test_x, test_y, test_digest = _test_split(prepared, data, cfg.accuracy_images)
        ref_x, ref_y = quality.held_out(prepared, monitoring)
        # The same seeded test rows as the accuracy figure: reuse those logits instead of a second pass.
        reuse = monitoring.reference_split == "test" and monitoring.reference_images == cfg.accuracy_images
        statistics = quality.file_statistics(prepared)
        artifacts = []
        for precision, result in results.items():
            path = tmp / FILES[precision]
            measured = reference = None
            if result.passed:
                if precision == "trt_fp16":
                    run = functools.partial(tensorrt_engine.run_plan, path, max_batch=cfg.max_batch)
                    runtime = tensorrt_engine.runtime_name()
                else:
                    run, runtime = functools.partial(onnx_io.run_onnx, path), onnx_io.runtime_name()
                logits = run(test_x)
                measured = Measured(
                    accuracy=float(np.mean(logits.argmax(1) == test_y)),
                    images=len(test_y),
                    runtime=runtime,
                    digest=test_digest,  # names exactly these images and labels (common.scored_split)
                    class_precision=scored_split.class_precision(logits.argmax(1), test_y, classes),
                )
                reference = quality.form_reference(
                    precision, (lambda _x, z=logits: z) if reuse else run, ref_x, ref_y, statistics, data,
                    monitoring, (measured.accuracy, measured.images),
                )  # fmt: skip
                quality_file = f"{quality.folder(precision)}/{FILE_NAME}"
                reference.write(tmp / quality_file)
            if path.suffix == ".onnx":
                onnx_io.set_metadata(
                    path,
                    {
                        "classes": classes,
                        "mean": list(data.mean),
                        "std": list(data.std),
                        "input_layout": "NCHW float32 RGB, (pixel/255 - mean)/std",
                        "precision": precision,
                        "source_run_id": source["run_id"] or "",
                        "git_commit": source["git_commit"],
                        "source_sha256": source["sha256"],
                        "parity": result.model_dump(),
                    },
                )
            if not result.passed:
                (tmp / "rejected").mkdir(exist_ok=True)
                path = path.rename(tmp / "rejected" / path.name)
            artifacts.append(
                Artifact(
                    precision=precision,
                    file=str(path.relative_to(tmp)),
                    format="tensorrt_plan" if precision == "trt_fp16" else "onnx",
                    sha256=sha256_file(path),
                    passed=result.passed,
                    parity=result,
                    test=measured,
                    built_on=tensorrt_engine.build_facts(cfg.max_batch) if precision == "trt_fp16" else None,
                    quality_reference=None if reference is None else quality_file,
                    quality_sha256=None if reference is None else sha256_file(tmp / quality_file),
                )
            )
        table = render_table(list(results.values()))
        manifest = ExportManifest(
            command=command,
            source=Source(**source),
            classes=classes,
            mean=list(data.mean),
            std=list(data.std),
            architecture=Architecture(
                depth=int(meta.get("depth", depth or 0)), width=int(meta.get("width", width or 0))
            ),
            io=Io(input=INPUT_NAME, output=OUTPUT_NAME, max_batch=cfg.max_batch),
            artifacts=artifacts,
            skipped=skipped,
        )
        (tmp / "parity.txt").write_text(f"{table}\nreproduce with: {command}\n")
        parity_digest = scored_split.digest(images, labels, classes)
        run_id, model_ids = _log_to_mlflow(
            tmp, manifest, results, source["run_id"], experiment, prepared, parity_digest, serving
        )
        manifest = manifest.with_model_ids(model_ids).model_copy(update={"mlflow_run_id": run_id})
        manifest.write(tmp / "manifest.json")
    print(table)
    failed = [p for p in cfg.required if p in results and not results[p].passed]
    if failed:
        raise ExportError(
            f"required artifact(s) failed the parity gate: {', '.join(failed)} (see {out_dir}/parity.txt)"
        )
    return manifest


def parity_rows(val_y: np.ndarray, n: int) -> np.ndarray:
    """Rows of the validation split every artifact's parity gate is judged on (seeded, balanced)."""
    return balanced_subset(val_y, n, seed=0)


def _test_split(prepared: Path, data: DataConfig, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` test images (class-balanced; 0: all of them), normalised, their labels and their digest."""
    images, labels = scored_split.load_rows(prepared, n)
    return normalize_batch(images, data).numpy(), labels, scored_split.digest(images, labels, data.classes)


def _calibration(prepared: Path, data: DataConfig, n: int) -> np.ndarray:
    train_x, train_y = np.load(prepared / "train_x.npy", mmap_mode="r"), np.load(prepared / "train_y.npy")
    return normalize_batch(np.asarray(train_x[balanced_subset(train_y, n, seed=1)]), data).numpy()


def _log_to_mlflow(
    folder: Path,
    manifest: ExportManifest,
    results: dict[str, ParityResult],
    run_id: str | None,
    experiment: str,
    prepared: Path,
    parity_digest: str,
    serving: ServingConfig,
) -> tuple[str, dict[str, str]]:
    """Log passed artifacts and the reports to the training run, or to a new run for outside weights.

    Each passed form becomes an MLflow 3 logged model of that run (:mod:`mlmodel.logged`); returns
    the run's id and each form's ``model_id``.
    """
    import mlflow

    from mlmodel.logged import log_form

    tracking.configure()
    if run_id is None:
        tracking.ensure_experiment(experiment)
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else "export-external-weights") as run:
        if run_id is None:
            mlflow.set_tags(
                {
                    "source_weights": manifest.source.weights,
                    "git_commit": manifest.source.git_commit,
                    "source_sha256": manifest.source.sha256,
                }
            )
        if manifest.source.dvc_lock:  # the pipeline state the forms came from (docs/mlflow-models.md)
            mlflow.set_tag("dvc_lock_sha256", manifest.source.dvc_lock)
        model_ids = {
            art.precision: log_form(folder, manifest, art, prepared, parity_digest, serving)
            for art in manifest.passed
        }
        for p, r in results.items():
            mlflow.log_metrics(
                {
                    f"parity_{p}_max_abs_logit": r.max_abs_logit,
                    f"parity_{p}_agreement": r.top1_agreement,
                    f"parity_{p}_accuracy": r.accuracy,
                    f"parity_{p}_passed": float(r.passed),
                }
            )
        mlflow.log_artifact(str(folder / "parity.txt"), "export")
        mlflow.log_dict(manifest.with_model_ids(model_ids).model_dump(mode="json"), "export/manifest.json")
        return run.info.run_id, model_ids
