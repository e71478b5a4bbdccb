"""Candidates derived from an exported ONNX classifier by editing only its output, for release trials.

Each variant is the same network with a step appended after its logits, so it differs from the original
in exactly one known way: a permutation of classes (a label swap), a bias per class (a model a few
points worse, or one within noise of the original), a subset of classes (a model of another dataset),
or a failure on some inputs. The release tests and ``benchmarks.release_trials`` both build and
register theirs here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def onnx_variant(
    src: Path,
    dest: Path,
    rotate: bool = False,
    order: list[int] | None = None,
    bias: list[float] | None = None,
    fail_beyond: float | None = None,
    scale: float | None = None,
) -> Path:
    """``src`` under another name and checksum, with at most these changes after its logits:

    ``rotate``: logits rolled by one class; ``order``: logits gathered in this order (a swap, or a
    subset: a model of fewer classes); ``bias``: added to the logits; ``fail_beyond``: a request whose
    mean input lies beyond it, seen from 0, fails (an out-of-range ``Gather``), as a model that breaks
    on some inputs does, while the zero warm-up samples and the gate's check near 0 still pass;
    ``scale``: the logits multiplied by it (below 1: the same answers, less sure of each).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(src)
    model.doc_string = f"release variant {dest.name}"
    graph, out = model.graph, model.graph.output[0].name
    if rotate:
        order = [
            int(i) for i in np.roll(np.arange(graph.output[0].type.tensor_type.shape.dim[1].dim_value), -1)
        ]
    if order is not None or bias is not None or fail_beyond is not None or scale is not None:
        for node in graph.node:
            node.output[:] = [f"{out}_raw" if o == out else o for o in node.output]
        current = f"{out}_raw"
        if order is not None:
            graph.initializer.append(numpy_helper.from_array(np.asarray(order, dtype=np.int64), "order"))
            graph.node.append(helper.make_node("Gather", [current, "order"], [f"{out}_perm"], axis=1))
            current = f"{out}_perm"
            graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(order)
        if bias is not None:
            graph.initializer.append(numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "bias"))
            graph.node.append(helper.make_node("Add", [current, "bias"], [f"{out}_biased"]))
            current = f"{out}_biased"
        if scale is not None:
            graph.initializer.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32), "scale"))
            graph.node.append(helper.make_node("Mul", [current, "scale"], [f"{out}_scaled"]))
            current = f"{out}_scaled"
        if fail_beyond is not None:
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.asarray(fail_beyond, dtype=np.float32), "threshold"),
                    numpy_helper.from_array(np.asarray(5, dtype=np.int64), "five"),
                    numpy_helper.from_array(np.zeros(1, dtype=np.float32), "zero"),
                ]
            )
            compare = "Greater" if fail_beyond > 0 else "Less"
            graph.node.extend(
                [
                    helper.make_node("ReduceMean", [graph.input[0].name], ["mean_in"], keepdims=0),
                    helper.make_node(compare, ["mean_in", "threshold"], ["beyond"]),
                    helper.make_node("Cast", ["beyond"], ["beyond_i"], to=TensorProto.INT64),
                    helper.make_node("Mul", ["beyond_i", "five"], ["index"]),
                    helper.make_node("Gather", ["zero", "index"], ["nothing_or_error"], axis=0),
                    helper.make_node("Add", [current, "nothing_or_error"], [f"{out}_checked"]),
                ]
            )
            current = f"{out}_checked"
        graph.node.append(helper.make_node("Identity", [current], [out]))
    onnx.checker.check_model(model)
    onnx.save(model, dest)
    return dest


def register_variant(name: str, base: int, path: Path, tags: dict[str, str] | None = None) -> int:
    """``path`` as a new version of ``name``, tagged like version ``base`` except its own file, hash,
    run and ``tags``. The file is logged to a run of its own, as the export stage logs artifacts."""
    import mlflow

    from common import tracking
    from common.export_manifest import QUALITY_REFERENCE_FILE
    from common.fsutil import sha256_file
    from registry import store

    c = store.client()
    base_tags = dict(c.get_model_version(name, str(base)).tags)
    form = base_tags.get("precision", "fp32")
    experiment = tracking.ensure_experiment("release-variants", root=path.parent)
    with mlflow.start_run(experiment_id=experiment, run_name=f"variant {path.name}") as run:
        mlflow.log_artifact(str(path), f"export/{form}")
        if "quality_sha256" in base_tags:  # the base's quality reference, as its test figures are copied
            reference = mlflow.artifacts.download_artifacts(
                f"models:/{name}/{base}/{QUALITY_REFERENCE_FILE}",
                dst_path=str(path.parent / f"{path.stem}-ref"),
            )
            mlflow.log_artifact(reference, f"export/{form}")
    own = {"file": path.name, "sha256": sha256_file(path), "run_id": run.info.run_id}
    source = f"runs:/{run.info.run_id}/export/{form}"
    return int(
        c.create_model_version(
            name, source, run_id=run.info.run_id, tags=base_tags | (tags or {}) | own
        ).version
    )


def register_run_files(manifest_path, cfg, precision: str = "fp32", file_bytes: bytes | None = None) -> int:
    """A version as the registry made them before MLflow Models: ``runs:/<run>/export/<form>``.

    For the migration's tests and benchmark; ``file_bytes`` registers other bytes under the form's
    tags (their own checksum), which no export manifest names.
    """
    from common.export_manifest import ExportManifest
    from common.fsutil import sha256_file
    from registry import store
    from registry.version_record import RegisteredVersion

    manifest = ExportManifest.read(manifest_path)
    art = manifest.artifact(precision)
    path = manifest_path.parent / art.file
    if file_bytes is not None:  # the same tags over other bytes: what a migration must refuse
        path = manifest_path.parent / "other" / art.file
        path.parent.mkdir()
        path.write_bytes(file_bytes)
        art = art.model_copy(update={"sha256": sha256_file(path)})
    c = store.client()
    c.log_artifact(manifest.mlflow_run_id, str(path), f"export/{precision}")
    c.log_artifact(
        manifest.mlflow_run_id, str(manifest_path.parent / art.quality_reference), f"export/{precision}"
    )
    name = cfg.registered_name(precision)
    store._ensure_model(c, name, manifest, precision)
    tags = RegisteredVersion.from_export(manifest, art, manifest.mlflow_run_id).to_tags()
    mv = c.create_model_version(
        name, f"runs:/{manifest.mlflow_run_id}/export/{precision}", manifest.mlflow_run_id, tags
    )
    return int(mv.version)
