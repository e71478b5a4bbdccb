"""What ``cifar10 release`` commands answer, as typed records (printed as JSON on stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, TypedDict


class Promoted(TypedDict):
    promoted: str  # "<registered name> v<version>"
    run_id: str | None


class Aborted(TypedDict):
    aborted: str
    production: int


class ReleaseStatus(TypedDict, total=False):
    """``cifar10 release status``: ``{"release": None}`` when none was ever recorded."""

    release: None
    candidate: str
    production: str
    step: str
    forced_reason: str | None
    limits: dict[str, Any] | None
    ended: dict[str, Any] | None
    owner: dict[str, Any] | None
    window: dict[str, float]
    candidate_images: int
    figures: list[dict[str, Any]]
    replicas: list[dict[str, Any]]  # with a fleet: each replica's READY versions, and whether it is in step


class ReleaseReport(NamedTuple):
    rows: list[dict[str, Any]]  # one per version: the report's table
    files: dict[str, Path]  # "json" and "png"
