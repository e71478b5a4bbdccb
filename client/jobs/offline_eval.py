"""``client offline-eval`` and ``client confusion``: accuracy of exactly the version the registry names.

An evaluation is only worth recording if it is attached to the right model version, so before
sending a single image the served version is checked against the registry (``production`` alias by
default): for ``--mode bytes`` the version the ``cifar10`` ensemble's classifier step names, for
``--mode tensor`` the explicit version the requests go to. A mismatch is refused (exit code 6), and
the ensemble check is repeated after the run, so a rollout in the middle cannot go unnoticed.
Metrics come from :mod:`common.metrics`, the same code as the pipeline's ``evaluate`` stage.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from client.core import images as img
from client.core.errors import (
    BadInput,
    ClientError,
    ModelNotReady,
    RegistryMissing,
    ServerUnreachable,
    VersionMismatch,
)
from client.core.served_model import read_contract
from client.core.transport import AsyncTriton, classify, wait_live
from client.jobs import folder_batch as batch_mod
from client.jobs.folder_batch import BatchConfig, Record
from common.fsutil import write_json
from common.metrics import ClassificationSummary, classification_summary, confusion_title, plot_confusion

log = logging.getLogger(__name__)


class EvalMetrics(ClassificationSummary, total=False):
    """``metrics.json`` of an offline evaluation: the scores, and exactly what was evaluated how."""

    registered_model: str
    model_version: int
    alias: str
    triton_model: str
    mode: str
    protocol: str
    failed_samples: int
    skipped_samples: int
    throughput_img_per_s: float | None
    latency_ms: dict[str, float]
    mlflow_run_id: str


@dataclass(frozen=True)
class EvalConfig:
    """``batch`` holds the connection settings; its model/version are filled in from the registry."""

    images: Path
    out_dir: Path
    batch: BatchConfig = field(default_factory=BatchConfig)
    precision: str | None = None  # None: the form the ensemble routes to (bytes), fp32 (tensor)
    alias: str = "production"
    version: int | None = None
    allow_newest: bool = False
    per_class: int | None = None
    ensemble: str = "cifar10"
    params: Path = Path("params.yaml")
    experiment: str = "cifar10-offline-eval"
    samples: int = 10
    mlflow: bool = True


@dataclass(frozen=True)
class Target:
    registered_name: str
    version: int
    alias: str | None
    triton_model: str


def resolve_target(cfg: EvalConfig) -> Target:
    """The registry's version for ``precision`` (exit code 5 when the model or alias is missing)."""
    from mlflow.exceptions import MlflowException

    from common.params import RegistryConfig, load_params
    from registry.aliases import resolve
    from registry.store import RegistryError

    rcfg = load_params(cfg.params).registry if Path(cfg.params).is_file() else RegistryConfig()
    precision = cfg.precision or "fp32"
    name = rcfg.registered_name(precision)
    try:  # read-only: the newest version stands in for a missing alias only if the caller says so
        resolved = resolve(name, cfg.alias, cfg.version, allow_newest=cfg.allow_newest)
    except (RegistryError, MlflowException) as exc:
        message = str(exc).splitlines()[0]
        if "has no alias" in message:
            message += "; or pass --version N, or --allow-newest"
        raise RegistryMissing(message) from exc
    return Target(name, resolved.version, resolved.alias, rcfg.triton_name(precision))


async def served_form(cfg: EvalConfig) -> str:
    """The form the ensemble routes to (``wrn_int8`` -> ``int8``): a cifar10 optimize choice or params.

    Evaluating "what serves" then needs no flag after the optimizer switched forms; the version is
    still checked against the registry's alias for that form, as for an explicit ``--precision``.
    """
    client = AsyncTriton(cfg.batch.endpoint)
    try:
        await wait_live(client, cfg.batch.connect_timeout_s)
        steps = (await client.model_config(cfg.ensemble)).get("ensemble_scheduling", {}).get("step", [])
    except ClientError:
        raise
    except Exception as exc:
        raise ModelNotReady(f"cannot read ensemble {cfg.ensemble!r}: {classify(exc).message}") from exc
    finally:
        await client.close()
    forms = [
        s["model_name"].removeprefix("wrn_") for s in steps if s.get("model_name", "").startswith("wrn_")
    ]
    if len(forms) != 1:
        raise ModelNotReady(
            f"ensemble {cfg.ensemble!r} routes through {len(forms)} classifiers; pass --precision"
        )
    return forms[0]


async def served_version(client: AsyncTriton, cfg: EvalConfig, target: Target) -> int:
    """The version the server would use for this evaluation; raises on not-ready (4) or mismatch (6)."""
    want, model = target.version, target.triton_model
    registry = f"registry {target.registered_name}@{target.alias or f'v{want}'} is v{want}"
    if cfg.batch.mode == "tensor":
        if await client.model_ready(model, want):
            return want
        try:
            versions = await client.model_versions(model)
        except Exception as exc:
            raise ModelNotReady(f"{model} is not ready on the server: {classify(exc).message}") from exc
        raise VersionMismatch(f"server has {model} versions {versions} ready, not v{want} ({registry})")
    if not await client.model_ready(cfg.ensemble):
        raise ModelNotReady(f"ensemble {cfg.ensemble!r} is not ready on the server")
    steps = (await client.model_config(cfg.ensemble)).get("ensemble_scheduling", {}).get("step", [])
    step = next((s for s in steps if s.get("model_name") == model), None)
    if step is None:
        routes = [s.get("model_name") for s in steps]
        served_forms = [r.removeprefix("wrn_") for r in routes if r and r.startswith("wrn_")]
        hint = f"--precision {served_forms[0]} to evaluate what it serves, or " if served_forms else ""
        raise VersionMismatch(
            f"ensemble {cfg.ensemble!r} routes through {routes}, not {model} (a cifar10 optimize "
            f"choice, or registry.ensemble_target); use {hint}--mode tensor for {model}"
        )
    served = int(step.get("model_version", -1))
    if served == -1:  # "latest": whatever is newest among the loaded versions
        served = max(await client.model_versions(model))
    if served != want:
        raise VersionMismatch(f"ensemble {cfg.ensemble!r} serves {model} v{served}, but {registry}")
    if not await client.model_ready(model, served):
        raise ModelNotReady(f"{model} v{served} is not ready on the server")
    return served


async def _check(cfg: EvalConfig, target: Target) -> int:
    client = AsyncTriton(cfg.batch.endpoint)
    try:
        await wait_live(client, cfg.batch.connect_timeout_s)
        served = await served_version(client, cfg, target)
        model = cfg.ensemble if cfg.batch.mode == "bytes" else target.triton_model
        contract = await read_contract(client, model, need_normalisation=False)
        folders = {p.name for p in Path(cfg.images).iterdir() if p.is_dir() and not p.name.startswith(".")}
        batch_mod.check_folder_classes(folders, contract.classes, model, exact=True)
        return served
    except ClientError:
        raise
    except Exception as exc:  # a failed config/metadata call: say which kind, as an exit code
        info = classify(exc)
        error = ServerUnreachable if info.transient else ModelNotReady
        raise error(f"cannot check the served version: {info.message}") from exc
    finally:
        await client.close()


def pick_samples(records: list[Record], n: int) -> list[dict]:
    """Up to ``n`` answered images, round-robin over true classes, with their top-k."""
    by_class: dict[str | None, list[Record]] = {}
    for r in records:
        if r.status == "ok":
            by_class.setdefault(r.true_label, []).append(r)
    picked: list[Record] = []
    depth = 0
    while len(picked) < n and any(len(v) > depth for v in by_class.values()):
        picked += [v[depth] for v in by_class.values() if len(v) > depth][: n - len(picked)]
        depth += 1
    return [
        {
            "path": r.path,
            "true_label": r.true_label,
            "predicted_label": r.predicted_label,
            "correct": r.true_label == r.predicted_label,
            "top_k": [{"label": lab, "probability": p} for lab, p in r.topk],
            "latency_ms": r.latency_ms,
        }
        for r in picked
    ]


def score(pairs: list[tuple[str, str]], classes: tuple[str, ...]) -> ClassificationSummary:
    """``classification_summary`` over (true, predicted) label pairs."""
    import numpy as np

    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({lab for pair in pairs for lab in pair if lab not in index})
    if unknown:
        raise BadInput(f"labels {unknown} are not among the classes {list(classes)}")
    y_true = np.array([index[t] for t, _ in pairs], dtype=np.int64)
    y_pred = np.array([index[p] for _, p in pairs], dtype=np.int64)
    return classification_summary(y_true, y_pred, list(classes))


def offline_eval(cfg: EvalConfig) -> EvalMetrics:
    """Check the version, evaluate the folder, write the reports and log them as an MLflow run."""
    items = img.discover(cfg.images, per_class=cfg.per_class)
    if any(i.label is None for i in items):
        raise BadInput(f"{cfg.images} has unlabelled files; offline-eval needs <root>/<class>/<image>")
    if cfg.precision is None and cfg.batch.mode == "bytes":
        cfg = dataclasses.replace(cfg, precision=asyncio.run(served_form(cfg)))
    target = resolve_target(cfg)
    served = asyncio.run(_check(cfg, target))
    bcfg = dataclasses.replace(
        cfg.batch,
        model=target.triton_model if cfg.batch.mode == "tensor" else cfg.ensemble,
        model_version=str(served) if cfg.batch.mode == "tensor" else "",
    )
    log.info(
        "evaluating %s v%d (%s) on %d images", target.registered_name, served, target.triton_model, len(items)
    )
    result = batch_mod.run_batch(items, bcfg)
    if cfg.batch.mode == "bytes" and (after := asyncio.run(_check(cfg, target))) != served:
        raise VersionMismatch(f"the served version changed during the evaluation (v{served} -> v{after})")
    pairs = [(r.true_label, r.predicted_label) for r in result.records if r.status == "ok"]
    if not pairs:
        raise ClientError(
            f"no image was answered; nothing to evaluate (errors: {result.summary['errors_by_type']})"
        )
    summary = score(pairs, result.classes)
    counts = result.summary["counts"]
    metrics: EvalMetrics = {
        **summary,
        "registered_model": target.registered_name,
        "model_version": served,
        "alias": target.alias,
        "triton_model": target.triton_model,
        "mode": bcfg.mode,
        "protocol": bcfg.endpoint.protocol,
        "failed_samples": counts["error"],
        "skipped_samples": counts["skipped"],
        "throughput_img_per_s": result.summary["throughput_img_per_s"],
        "latency_ms": result.summary["latency_ms"],
    }
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = batch_mod.write_outputs(result, out)
    files["samples"] = out / "sample_predictions.json"
    write_json(files["samples"], pick_samples(result.records, cfg.samples))
    files["confusion"] = plot_confusion(
        summary["confusion_matrix"],
        list(result.classes),
        out / "confusion_matrix.png",
        confusion_title(summary, f"{target.registered_name} v{served}"),
    )
    files["metrics"] = out / "metrics.json"
    if cfg.mlflow:
        _log_run(cfg, target, metrics, files)  # writes metrics.json (with the run id) and logs every file
    else:
        write_json(files["metrics"], metrics)
    return metrics


def _log_run(cfg: EvalConfig, target: Target, metrics: dict, files: dict[str, Path]) -> str:
    """One run in ``cfg.experiment`` tagged with the registered model and version; all files attached."""
    import mlflow

    from common import tracking

    tracking.configure()
    experiment_id = tracking.ensure_experiment(cfg.experiment)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{target.registered_name}-v{target.version}"
    ) as run:
        mlflow.set_tags(
            {
                "registered_model": target.registered_name,
                "model_version": str(target.version),
                "alias": target.alias or "",
                "triton_model": target.triton_model,
                "mode": metrics["mode"],
                "protocol": metrics["protocol"],
                "server": cfg.batch.endpoint.url,
                "complete": str(metrics["failed_samples"] == 0).lower(),
                "git_commit": tracking.git_commit(),
            }
        )
        mlflow.log_params(
            {
                "images": str(cfg.images),
                "per_class": cfg.per_class or "all",
                "concurrency": cfg.batch.concurrency,
                "top_k": cfg.batch.top_k,
            }
        )
        values = {
            k: metrics[k]
            for k in (
                "accuracy",
                "tested_samples",
                "macro_precision",
                "macro_recall",
                "macro_f1",
                "failed_samples",
                "skipped_samples",
            )
        }
        values |= {f"f1_{c}": v["f1"] for c, v in metrics["per_class"].items()}
        if metrics["throughput_img_per_s"] is not None:
            values["throughput_img_per_s"] = metrics["throughput_img_per_s"]
        mlflow.log_metrics({k: float(v) for k, v in values.items()})
        metrics["mlflow_run_id"] = run.info.run_id
        write_json(files["metrics"], metrics)
        for path in files.values():
            mlflow.log_artifact(str(path))
        return run.info.run_id


def confusion_from_csv(
    csv_path: Path,
    out: Path,
    classes: tuple[str, ...] | None = None,
    run_id: str | None = None,
    label: str = "",
) -> ClassificationSummary:
    """Redraw the confusion matrix from any ``predictions.csv``; optionally attach it to an MLflow run.

    Without ``classes``, the labels found in the file, sorted (CIFAR-10's own order is alphabetical).
    """
    if not Path(csv_path).is_file():
        raise BadInput(f"predictions file not found: {csv_path}")
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pairs = [
        (r["true_label"], r["predicted_label"])
        for r in rows
        if r.get("status", "ok") == "ok" and r.get("true_label") and r.get("predicted_label")
    ]
    if not pairs:
        raise BadInput(f"{csv_path} has no answered rows with a true label")
    classes = classes or tuple(sorted({c for pair in pairs for c in pair}))
    summary = score(pairs, classes)
    plot_confusion(summary["confusion_matrix"], list(classes), Path(out), confusion_title(summary, label))
    if run_id:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from common import tracking

        try:
            MlflowClient(tracking.configure()).log_artifact(run_id, str(out))
        except MlflowException as exc:
            raise BadInput(f"cannot log to MLflow run {run_id}: {str(exc).splitlines()[0]}") from exc
    return summary
