"""What a sync decided and did, as typed records: per served form, the release, the ensemble target.

``cifar10 registry sync --json`` prints :class:`SyncResult`; the release controller, the optimizer
and the demo read its fields rather than keys of a nested dict. ``format_version`` names the shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from serving.repository.spec import RepositorySpec


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServedForm(Record):
    """One registered form as served: its Triton model, the versions held and the batch limit."""

    triton_model: str
    production: int
    staging: int | None
    max_batch: int


class ReleaseShown(Record):
    candidate: str
    step: str


class TargetShown(Record):
    form: str
    decided_by: str


class SyncSummary(Record):
    forms: dict[str, ServedForm]  # by registered name
    release: ReleaseShown | None = None
    ensemble_target: TargetShown


class SyncResult(Record):
    format_version: Literal[1] = 1
    models: SyncSummary
    changed: bool
    phases: list[str] = []  # a live rollout's phases ("stage", "switch", "retire"); [] when none ran
    servers: list[str] = []  # the replicas the rollout reached, in order (fleet.replicas, or "server")


@dataclass(frozen=True)
class DesiredState:
    """The repository spec the registry calls for, and the summary of how it was resolved."""

    spec: RepositorySpec
    summary: SyncSummary
