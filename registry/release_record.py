"""The state of a progressive release, kept in the registry so that it outlives any controller.

One release at a time per served ensemble: the record is the tag ``release`` (JSON) on the registered
model of the form the ensemble routes to (production's model). It says which candidate is on trial,
at which step (``gate``, ``shadow``, ``canary``), with which traffic shares, since when, and who owns
it (host, pid, heartbeat): a controller that crashed leaves a record naming it, so traffic is never
split without a recorded owner, and starting the controller again resumes at the recorded step.
:mod:`registry.sync` reads the record, so whatever rolls the server (the controller, ``abort``, a
plain ``cifar10 registry sync``) serves the step the registry names. Every transition is appended to
the record's ``log``; an ended release leaves its record with ``step`` ``promoted``, ``rolled_back``
or ``aborted`` (inactive: sync ignores it), until the next release replaces it.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, replace

from registry import store
from registry.tags import TagError

TAG = "release"
ACTIVE = ("gate", "shadow", "canary")
ENDED = ("promoted", "rolled_back", "aborted", "refused")
PROCESS_TOKEN = uuid.uuid4().hex  # this process as an owner: pids repeat across hosts and restarts


RECORD_VERSION = 1


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    heartbeat: float  # epoch seconds of the owner's last write
    token: str = ""  # unique per controller process (PROCESS_TOKEN); "" in records of older versions

    @classmethod
    def me(cls, token: str | None = None) -> Owner:
        return cls(socket.gethostname(), os.getpid(), time.time(), token or PROCESS_TOKEN)

    def same(self, other: Owner | None) -> bool:
        """The same controller (token, host and pid), whatever the heartbeats."""
        return other is not None and (self.token, self.host, self.pid) == (other.token, other.host, other.pid)

    def alive(self, timeout_s: float) -> bool:
        """Whether this owner may still be driving the release (a process of this host must exist)."""
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return time.time() - self.heartbeat < timeout_s


@dataclass(frozen=True)
class ReleaseRecord:
    candidate_name: str  # registered model of the candidate (its form)
    candidate_version: int
    production_name: str  # registered model the ensemble routes to
    production_version: int
    step: str  # one of ACTIVE or ENDED
    step_index: int = 0  # 0 gate/shadow, k the k-th canary weight
    canary_weight: float = 0.0
    shadow_fraction: float = 0.0
    step_started_at: float = 0.0
    started_at: float = 0.0
    owner: Owner | None = None
    run_id: str = ""
    forced_reason: str = ""
    limits: dict = field(default_factory=dict)  # release.limits.Limits.to_dict(), fixed at the gate
    log: tuple[dict, ...] = field(default_factory=tuple)
    record_version: int = RECORD_VERSION  # the shape of the tag; one written before it existed reads as 1

    @property
    def active(self) -> bool:
        return self.step in ACTIVE

    @property
    def label(self) -> str:
        if self.step == "canary":
            return f"canary {self.canary_weight:.0%}"
        return self.step

    def moved(self, step: str, note: dict | None = None, **changes: object) -> ReleaseRecord:
        """The record at ``step`` (a transition, logged), owned by this process from now on."""
        now = time.time()
        entry = {"at": now, "from": self.label, "step": step, **(note or {})}
        owner = Owner.me(self.owner.token if self.owner and self.owner.pid == os.getpid() else None)
        new = replace(self, step=step, step_started_at=now, owner=owner, **changes)  # type: ignore[arg-type]
        return replace(new, log=(*self.log, entry | {"label": new.label}))

    def to_tag(self) -> str:
        data = asdict(self)
        data["log"] = list(self.log)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_tag(cls, text: str, where: str) -> ReleaseRecord:
        try:
            data = json.loads(text)
            owner = Owner(**data.pop("owner")) if data.get("owner") else None
            record = cls(**{**data, "owner": owner, "log": tuple(data.get("log", ()))})
        except (ValueError, TypeError, KeyError) as exc:
            raise TagError(f"{where}: tag {TAG} is not a release record: {exc}") from None
        if record.record_version != RECORD_VERSION:
            raise TagError(f"{where}: tag {TAG} has record_version {record.record_version}; this reads 1")
        if record.step not in ACTIVE + ENDED or not 0 <= record.canary_weight <= 1:
            raise TagError(f"{where}: tag {TAG} has step {record.step!r}, weight {record.canary_weight}")
        return record


def read(production_name: str) -> ReleaseRecord | None:
    """The release record of the ensemble served from ``production_name``, active or ended."""
    rm = store.registered_model(store.client(), production_name)
    text = (rm.tags or {}).get(TAG)
    return ReleaseRecord.from_tag(text, production_name) if text else None


def active(production_name: str) -> ReleaseRecord | None:
    record = read(production_name)
    return record if record is not None and record.active else None


def write(record: ReleaseRecord) -> ReleaseRecord:
    """Store ``record`` (with a fresh heartbeat when this process owns it)."""
    if record.owner is not None and record.owner.pid == os.getpid():
        record = replace(record, owner=Owner.me(record.owner.token))
    c = store.client()
    store.call_registry(
        f"recording the release on {record.production_name}",
        c.set_registered_model_tag,
        record.production_name,
        TAG,
        record.to_tag(),
    )
    return record
