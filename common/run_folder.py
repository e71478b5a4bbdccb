"""A training run kept on disk, so a missing tracking server never loses one.

The ``train`` stage records every param, tag, metric (with its wall-clock timestamp) and artifact in
a *run folder* first, and mirrors each record to MLflow while the tracking store answers. Where
MLflow is not installed (the lent GPU machine) or stops answering mid-run, training carries on and
the folder still holds the whole run; ``cifar10 registry import-run FOLDER`` later replays it into
the tracking store with its original start, end and metric times, once (the folder remembers the
run it became).

Layout::

    run.json        id, experiment, name, start/end time (ms), status, params, tags, mlflow_run_id
    metrics.jsonl   {"key", "value", "step", "timestamp"} per line, in logging order
    artifacts/      files under their artifact paths
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from common.fsutil import write_json


class ImportedRun(NamedTuple):
    run_id: str
    created: bool  # False: the folder had been imported before, and nothing was logged again


log = logging.getLogger(__name__)
RUN_FILE, METRICS_FILE, ARTIFACTS = "run.json", "metrics.jsonl", "artifacts"


def _now_ms() -> int:
    return int(time.time() * 1000)


class RunFolder:
    """Append-only record of one run; reopened (not restarted) when a resumed training finds it."""

    def __init__(self, folder: Path, experiment: str, name: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / RUN_FILE
        if path.exists():
            self.meta = json.loads(path.read_text())
            self.meta["status"] = "RUNNING"
        else:
            self.meta = {
                "id": uuid.uuid4().hex,
                "experiment": experiment,
                "name": name,
                "start_time": _now_ms(),
                "end_time": None,
                "status": "RUNNING",
                "params": {},
                "tags": {},
                "mlflow_run_id": None,
                "mirrored": True,  # every record also reached MLflow (False once one did not)
            }
        self.save()

    def save(self) -> None:
        write_json(self.folder / RUN_FILE, self.meta)

    def params(self, values: dict[str, Any]) -> None:
        self.meta["params"] |= {k: str(v) for k, v in values.items()}
        self.save()

    def tags(self, values: dict[str, str]) -> None:
        self.meta["tags"] |= {k: str(v) for k, v in values.items()}
        self.save()

    def metrics(self, values: dict[str, float], step: int) -> None:
        """One write per call, flushed to disk: a kill leaves at most one unterminated line."""
        stamp = _now_ms()
        rows = "".join(
            json.dumps({"key": k, "value": float(v), "step": step, "timestamp": stamp}) + "\n"
            for k, v in values.items()
        )
        path = self.folder / METRICS_FILE
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:  # the last byte only, not the whole file every epoch
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    rows = "\n" + rows  # end a line a killed run left unterminated; the import skips it
        with open(path, "a") as fh:
            fh.write(rows)
            fh.flush()
            os.fsync(fh.fileno())

    def artifact(self, path: Path, artifact_path: str) -> None:
        target = self.folder / ARTIFACTS / artifact_path
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / Path(path).name)

    def text(self, text: str, name: str) -> None:
        target = self.folder / ARTIFACTS / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def end(self, status: str = "FINISHED") -> None:
        self.meta |= {"status": status, "end_time": _now_ms()}
        self.save()


class RunRecorder:
    """The run folder, mirrored to MLflow for as long as MLflow is there and answers.

    ``mlflow_run`` is an active MLflow run (or ``None``); the first failed mirror write turns the
    mirror off with one warning, and the folder is marked as needing an import.
    """

    def __init__(self, folder: RunFolder, mlflow_run=None) -> None:
        self.folder, self.mlflow_run = folder, mlflow_run
        if mlflow_run is not None:
            self.folder.meta["mlflow_run_id"] = mlflow_run.info.run_id
        else:
            self.folder.meta["mirrored"] = False
        self.folder.save()

    @property
    def run_id(self) -> str | None:
        return self.folder.meta["mlflow_run_id"] if self.folder.meta["mirrored"] else None

    def _mirror(self, what: str, call) -> None:
        if self.mlflow_run is None:
            return
        try:
            call()
        except Exception as exc:  # any tracking failure: the folder has it, training goes on
            log.warning(
                "MLflow stopped answering (%s: %s); the run continues in %s - import it later with "
                "`cifar10 registry import-run %s`",
                what,
                exc,
                self.folder.folder,
                self.folder.folder,
            )
            self.mlflow_run = None
            self.folder.meta["mirrored"] = False
            self.folder.save()

    def metrics(self, values: dict[str, float], step: int) -> None:
        self.folder.metrics(values, step)
        self._mirror("log_metrics", lambda: __import__("mlflow").log_metrics(values, step=step))

    def artifact(self, path: Path, artifact_path: str) -> None:
        self.folder.artifact(path, artifact_path)
        self._mirror("log_artifact", lambda: __import__("mlflow").log_artifact(str(path), artifact_path))

    def text(self, text: str, name: str) -> None:
        self.folder.text(text, name)
        self._mirror("log_text", lambda: __import__("mlflow").log_text(text, name))

    def end(self, status: str = "FINISHED") -> None:
        self.folder.end(status)
        self._mirror("end_run", lambda: __import__("mlflow").end_run(status))

    def suspend(self) -> None:
        """An interrupted run: the folder stays RUNNING (the stage resumes it), MLflow's ends KILLED."""
        self._mirror("end_run", lambda: __import__("mlflow").end_run("KILLED"))


def import_run(folder: Path) -> ImportedRun:
    """Replay a run folder into the tracking store; returns (MLflow run id, whether it was created).

    A folder whose every record already reached MLflow, or that was imported before, is not imported
    again. Params, tags, metrics (with their own timestamps and steps) and artifacts go in, and the
    run gets the folder's start and end times and status.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from common import tracking

    meta = json.loads((Path(folder) / RUN_FILE).read_text())
    if meta.get("mlflow_run_id") and (meta.get("mirrored") or meta.get("imported")):
        return ImportedRun(meta["mlflow_run_id"], False)
    if meta.get("status") == "RUNNING":
        raise ValueError(f"{folder}: the run is still running (or was killed); finish or resume it first")
    client = MlflowClient(tracking.configure())
    experiment = tracking.ensure_experiment(meta["experiment"])
    # The folder's own times also as tags: a later stage that logs into this run (the export) resumes
    # it, and MLflow then moves the run's end time to that stage's.
    tags = meta["tags"] | {
        "mlflow.runName": meta["name"],
        "run_folder_id": meta["id"],
        "run_folder_start_time": str(meta["start_time"]),
        "run_folder_end_time": str(meta["end_time"]),
    }
    if meta.get("mlflow_run_id"):  # a mirror that stopped part-way: this complete copy replaces it
        tags["replaces_partial_run"] = meta["mlflow_run_id"]
    run = client.create_run(experiment, start_time=meta["start_time"], tags=tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in meta["params"].items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    path = Path(folder) / METRICS_FILE
    text = path.read_text() if path.exists() else ""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line a kill cut short: dropped, not fatal
            log.warning("%s: skipping a broken metrics line: %.80s", folder, line)
    metrics = [Metric(r["key"], r["value"], r["timestamp"], r["step"]) for r in rows]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    if (Path(folder) / ARTIFACTS).is_dir():
        client.log_artifacts(run_id, str(Path(folder) / ARTIFACTS))
    client.set_tag(run_id, "imported_from_run_folder", "true")
    client.set_terminated(run_id, status=meta["status"], end_time=meta["end_time"])
    meta |= {"mlflow_run_id": run_id, "imported": True}
    write_json(Path(folder) / RUN_FILE, meta)
    return ImportedRun(run_id, True)
