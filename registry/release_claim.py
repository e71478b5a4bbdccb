"""One owner for a release, elected through registry tags, which have no compare-and-set.

MLflow's registry offers last-writer-wins tags and nothing atomic, so two ``start`` commands at the
same instant could both read "no release" and both write one. The election instead gives every
contender a tag of its own, so no write is lost, and decides after a pause that outlasts any write:

1. **look** - read the release record: an active release with a live owner other than us ends it
   (busy). Start a clock.
2. **claim** - write ``release.claim.<token>`` (host, pid, wall time). If that took longer than
   ``settle_s / 2`` since step 1 began, the look is too old to trust: withdraw, busy.
3. **settle** - sleep ``settle_s``.
4. **count** - read every claim and the record again. We win only if no active release has a live
   owner other than us and our token is the smallest of the fresh claims (a claim older than
   ``owner_timeout_s`` is a crashed contender's and is swept); otherwise withdraw, busy.
5. The winner writes the release record within ``settle_s / 2`` of step 4 (checked by the caller
   through :meth:`Election.in_time`), then drops its claim.

Why exactly one wins, given every registry call completes within ``settle_s / 2`` (steps 2 and 5 check
that bound themselves): two contenders that see each other's claims at step 4 pick the same smallest
token. A contender ``Z`` whose claim the winner ``X`` did not see wrote it after ``X`` counted; ``Z``
looked at most ``settle_s / 2`` before writing, and counts ``settle_s`` after, so by then ``X``'s
record (written within ``settle_s / 2`` of ``X``'s count) is there: ``Z`` sees a live owner and
loses. ``tests/registry/test_release_claim.py`` runs many contenders at once, with random delays
between every step, against a real MLflow store.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

from common.exit_codes import Busy
from registry import release_record, store
from registry.release_record import Owner

PREFIX = "release.claim."


class ReleaseBusy(Busy):
    """Another release is in progress, or another start claimed it first (exit code 2)."""


@dataclass(frozen=True)
class Election:
    owner: Owner
    counted_at: float  # time.monotonic() when the claims were counted (step 4)
    settle_s: float

    def in_time(self) -> bool:
        """Whether the record written just now landed within the bound the argument needs."""
        return time.monotonic() - self.counted_at <= self.settle_s / 2


def _claims(name: str) -> tuple[dict[str, dict], release_record.ReleaseRecord | None]:
    rm = store.registered_model(store.client(), name)
    tags = dict(rm.tags or {})
    claims = {}
    for key, value in tags.items():
        if key.startswith(PREFIX):
            try:
                claims[key[len(PREFIX) :]] = json.loads(value)
            except ValueError:
                claims[key[len(PREFIX) :]] = {}
    text = tags.get(release_record.TAG)
    return claims, release_record.ReleaseRecord.from_tag(text, name) if text else None


def _other_live_owner(record, owner: Owner, timeout_s: float) -> str | None:
    if record is None or not record.active or record.owner is None or record.owner.same(owner):
        return None
    if not record.owner.alive(timeout_s):
        return None
    return (
        f"a release of {record.candidate_name} v{record.candidate_version} is at step {record.label}, "
        f"driven by pid {record.owner.pid} on {record.owner.host}"
    )


def withdraw(name: str, token: str) -> None:
    # a claim left behind (the registry failed just now) is swept as stale by a later election
    with contextlib.suppress(Exception):
        store.client().delete_registered_model_tag(name, PREFIX + token)


def elect(name: str, owner: Owner, settle_s: float, owner_timeout_s: float, pause=time.sleep) -> Election:
    """Claim the release of ``name`` for ``owner``; raises :class:`ReleaseBusy` unless it won."""
    looked = time.monotonic()
    _, record = _claims(name)
    busy = _other_live_owner(record, owner, owner_timeout_s)
    if busy:
        raise ReleaseBusy(busy)
    value = json.dumps({"host": owner.host, "pid": owner.pid, "at": time.time()})
    c = store.client()
    store.call_registry(
        f"claiming the release of {name}", c.set_registered_model_tag, name, PREFIX + owner.token, value
    )
    if time.monotonic() - looked > settle_s / 2:
        withdraw(name, owner.token)
        raise ReleaseBusy(f"the registry took over {settle_s / 2:g} s to take a claim; start again")
    pause(settle_s)
    counted = time.monotonic()
    claims, record = _claims(name)
    busy = _other_live_owner(record, owner, owner_timeout_s)
    now = time.time()
    fresh = {t for t, v in claims.items() if now - float(v.get("at", 0) or 0) < owner_timeout_s}
    for stale in set(claims) - fresh - {owner.token}:
        withdraw(name, stale)
    if busy is None and owner.token not in claims:
        busy = "our claim vanished (withdrawn elsewhere)"
    if busy is None and min(fresh | {owner.token}) != owner.token:
        rival = claims[min(fresh)]
        busy = (
            "another start claimed this release at the same time "
            f"(pid {rival.get('pid')} on {rival.get('host')})"
        )
    if busy:
        withdraw(name, owner.token)
        raise ReleaseBusy(busy)
    return Election(owner, counted, settle_s)


def take(election: Election, name: str, record: release_record.ReleaseRecord) -> release_record.ReleaseRecord:
    """Write the elected owner's record (step 5), re-checked when the write was slower than the bound.

    The claim is withdrawn whatever happens: a claim left behind would make the next starts wait for
    it to go stale.
    """
    try:
        record = release_record.write(record)
        if not election.in_time():  # the argument's timing bound failed: whoever wrote last owns it
            time.sleep(election.settle_s)
            current = release_record.read(name)
            if current is None or not election.owner.same(current.owner):
                raise ReleaseBusy("another start took this release over while the registry was slow")
        return record
    finally:
        withdraw(name, election.owner.token)
