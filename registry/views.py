"""What the registry's read and alias functions return, as TypedDicts: the keys ``--json`` prints.

They stay dicts (JSON out of the box, and what ``cifar10 registry list --json`` has printed since
the start), but typed, so a caller in another package reads named keys a type checker knows.
"""

from __future__ import annotations

from typing import TypedDict


class AliasMoved(TypedDict):
    name: str
    alias: str
    version: int
    previous: int | None


class AliasRolledBack(TypedDict):
    name: str
    alias: str
    version: int
    rolled_back_from: int


class VersionSource(TypedDict, total=False):
    kind: str  # "training run" | "weights file"
    run_id: str
    file: str
    sha256: str


AliasPeriod = TypedDict(
    "AliasPeriod", {"alias": str, "from": str, "by": str, "until": str | None, "ended_by": str | None}
)


class VersionRow(TypedDict):
    version: int
    aliases: list[str]
    run_id: str | None
    created: str
    precision: str | None
    parity_passed: bool
    parity_agreement: str | None
    parity_max_abs_logit: str | None
    test_accuracy: str  # "0.9324" or "unknown"
    test_images: int | None
    test_runtime: str | None
    sha256: str
    source: VersionSource
    registered_from: str  # models:/<model_id> (an MLflow Model) or runs:/<run>/export/<form> (before)
    alias_periods: list[AliasPeriod]


class ModelDescription(TypedDict):
    name: str
    aliases: dict[str, int]
    history: dict[str, list[int]]
    versions: list[VersionRow]
