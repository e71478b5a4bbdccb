"""Log each exported form as an MLflow 3 logged model, with its figures tied to the data behind them.

Called by the export stage inside its run (the training run, or an export run for outside weights).
Each form that passed its parity gate becomes one logged model (``mlflow.models.Model.log`` with
:class:`mlmodel.package.FormModel`): the run lists it among its outputs, and its parity and test
figures are logged as metrics *on the model*, each with the dataset it was measured on (the
validation rows the gate compared, the test rows it was scored on), which is what the MLflow UI's
model page shows. The registry then registers ``models:/<model_id>`` (:mod:`registry.store`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from common import lineage
from common.export_manifest import Artifact, ExportManifest
from common.params import ServingConfig
from mlmodel import signatures
from mlmodel.facts import ModelFacts, Tensor
from mlmodel.package import FormModel

log = logging.getLogger(__name__)
UNLINKED_STEP = -1
EXAMPLE_IMAGES = 2  # test images in each model's input example (the pyfunc is validated on them at log time)


def form_facts(manifest: ExportManifest, art: Artifact, path: Path, serving: ServingConfig) -> ModelFacts:
    """The facts of one exported form: its tensors read from the file itself where it is ONNX."""
    if art.format == "onnx":
        input_, output = signatures.onnx_tensors(path)
    else:  # a plan's bindings are the ONNX file's it was built from
        input_ = Tensor(name=manifest.io.input, dtype="float32", shape=(-1, 3, 32, 32))
        output = Tensor(name=manifest.io.output, dtype="float32", shape=(-1, len(manifest.classes)))
    return ModelFacts(
        precision=art.precision,
        format=art.format,
        file=path.name,
        sha256=art.sha256,
        quality_sha256=art.quality_sha256,
        classes=tuple(manifest.classes),
        mean=tuple(manifest.mean),
        std=tuple(manifest.std),
        input=input_,
        output=output,
        max_batch=manifest.io.max_batch,
        max_image_bytes=serving.max_image_bytes,
        max_image_pixels=serving.max_image_pixels,
        parity=art.parity,
        test=art.test,
        source=manifest.source,
        export_command=manifest.command,
        built_on=art.built_on,
    )


def log_form(
    folder: Path,
    manifest: ExportManifest,
    art: Artifact,
    prepared: Path | None,
    parity_digest: str | None,
    serving: ServingConfig,
    log_split: bool = True,
) -> str:
    """Log one passed form from the export ``folder`` into the active run; returns its ``model_id``.

    ``prepared``: the data it was gated and scored on, for the input example and the figures'
    datasets; ``None`` (a migration without the data at hand) logs the figures without datasets and
    a synthetic input example. ``log_split``: also log the test split on the run (not when migrating
    an old run, which must not be said to have used today's data).
    """
    import mlflow
    from mlflow.models import Model

    started = time.perf_counter()
    path = folder / art.file
    facts = form_facts(manifest, art, path, serving)
    quality = folder / art.quality_reference if art.quality_reference else None
    if prepared is not None:
        example = np.asarray(np.load(prepared / "test_x.npy", mmap_mode="r")[:EXAMPLE_IMAGES])
    else:  # a gradient image: any picture does for the contract's shape
        ramp = np.linspace(0, 255, 32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
        example = np.stack([ramp, ramp[::-1]]).astype(np.uint8)
    info = Model.log(
        artifact_path=None,
        name=f"wrn-{art.precision}",
        flavor=FormModel(facts, path, quality, example),
        model_type="image-classifier",
        # MLflow links the run's metrics of this step to the model; a form's own figures are logged
        # on it below, so no step the training or evaluation logged (epochs, step 0) is taken
        step=UNLINKED_STEP,
        tags={
            "precision": art.precision,
            "format": art.format,
            "sha256": art.sha256,
            "git_commit": manifest.source.git_commit,
            "dvc_lock_sha256": manifest.source.dvc_lock or "none (not exported under DVC)",
        },
    )
    model_id = info.model_id

    def dataset(name: str, digest: str | None):
        return lineage.rows_dataset(prepared, name, digest) if prepared is not None and digest else None

    validation = dataset(f"{lineage.NAMES['val']}-parity", parity_digest)
    p = art.parity
    for key, value in {
        "parity_max_abs_logit": p.max_abs_logit,
        "parity_top1_agreement": p.top1_agreement,
        "parity_accuracy": p.accuracy,
        "parity_accuracy_drop": p.accuracy_drop,
    }.items():
        mlflow.log_metric(key, value, model_id=model_id, dataset=validation)
    if art.test is not None:
        scored = dataset(f"{lineage.NAMES['test']}-scored", art.test.digest)
        mlflow.log_metric("test_accuracy", art.test.accuracy, model_id=model_id, dataset=scored)
    if prepared is not None and log_split:
        mlflow.log_input(lineage.split_dataset(prepared, "test"), context="testing")
    mlflow.finalize_logged_model(model_id, "READY")
    log.info("%s logged as MLflow model %s in %.1f s", art.precision, model_id, time.perf_counter() - started)
    return model_id
