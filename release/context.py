"""What a release runs against (:class:`Context`), its plan of steps, and how its outcome is raised."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.exit_codes import Failed
from common.params import Params
from common.promql import Prometheus
from registry import release_record
from registry.release_record import ReleaseRecord
from registry.sync_result import SyncResult

LOCK_WAIT_S = 120.0  # a rollout of the same repository (an abort's, a resumed step's) takes seconds


class ReleaseFailed(Failed):
    """The gate refused the candidate, or a step breached and the release was rolled back (1)."""


@dataclass(frozen=True)
class Context:
    params: Params
    repository: Path | str  # a folder, or an s3:// URI (common.stores)
    cache: Path
    server: str  # gRPC host:port the gate's probes go to: the server, or the fleet's balancer
    header: tuple[str, str] | None
    prometheus: Prometheus
    experiment: str = "cifar10-release"
    prepared: Path = Path("data/prepared")  # where production is scored on the candidate's test rows

    @property
    def fleet(self) -> bool:
        """Whether every step reaches every replica of ``params.fleet`` (and not ``server`` alone)."""
        return self.params.fleet.named

    @property
    def form(self) -> str:
        """The form the public ensemble routes to (a cifar10 optimize choice, else params.yaml)."""
        from common.params import ALL_PRECISIONS
        from registry import serving_choice

        choice = serving_choice.read(self.params.registry, ALL_PRECISIONS)
        return choice.precision if choice else self.params.registry.ensemble_target

    def sync(self) -> SyncResult:
        """Roll the server over; another rollout of this repository (an abort, say) is waited for."""
        from registry.sync import sync

        return sync(
            self.params, self.repository, self.cache, None if self.fleet else self.server, self.header,
            lock_timeout_s=LOCK_WAIT_S, fleet=self.fleet,
        )  # fmt: skip


@dataclass(frozen=True)
class PlannedStep:
    """One step of a release's plan: what the router does while the step is judged."""

    name: str  # "shadow" | "canary"
    index: int  # 0 for shadow, 1.. for the canary weights in order
    shadow_fraction: float
    canary_weight: float


def steps(ctx: Context) -> list[PlannedStep]:
    """The plan, in order: shadow, then one canary step per weight of ``release.canary_weights``."""
    cfg = ctx.params.release
    out = [PlannedStep("shadow", 0, cfg.shadow_fraction, 0.0)]
    return out + [PlannedStep("canary", i + 1, 0.0, w) for i, w in enumerate(cfg.canary_weights)]


def window(ctx: Context, step: str) -> float:
    cfg = ctx.params.release
    return cfg.shadow_window_s if step == "shadow" else cfg.canary_window_s


def triton_model(ctx: Context, registered_name: str) -> str:
    """The Triton model that serves a registered model's versions."""
    from common.params import ALL_PRECISIONS

    cfg = ctx.params.registry
    form = next(p for p in ALL_PRECISIONS if cfg.registered_name(p) == registered_name)
    return cfg.triton_name(form)


def check_still_mine(record: ReleaseRecord) -> None:
    """Stop if someone aborted the release or another controller took it over since we last wrote."""
    current = release_record.read(record.production_name)
    if current is None or not current.active or record.owner is None or not record.owner.same(current.owner):
        raise ReleaseFailed(
            f"the release was ended or taken over elsewhere (now: {current.label if current else 'none'})"
        )
