"""Concurrent ``start``s elect exactly one owner, against a real MLflow store, under many interleavings.

Each round starts several contenders (threads, each its own controller token) at random offsets
within two settle periods - together, overlapping, and late after the winner wrote its record - and
each runs the election and, if it wins, writes the release record as ``cifar10 release start`` does.
Whatever the interleaving, exactly one wins and every other one is told it is busy (exit code 2).
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from common import exit_codes
from registry import release_claim, release_record, store
from registry.release_claim import ReleaseBusy
from registry.release_record import Owner, ReleaseRecord

# a write may take up to SETTLE_S / 2 (the protocol's bound): roomy enough for a loaded 2-core CI host
SETTLE_S = 1.2
CONTENDERS = 5
ROUNDS = 3  # round 0 all at once, then two of random spreads


@pytest.fixture
def model(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    name = f"claim-{uuid.uuid4().hex[:6]}"
    store.client().create_registered_model(name)
    return name


def contend(name: str, token: str, delay: float, outcome: dict, lock: threading.Lock) -> None:
    time.sleep(delay)
    owner = Owner.me(token)
    try:
        election = release_claim.elect(name, owner, SETTLE_S, owner_timeout_s=60)
        record = ReleaseRecord(name, 2, name, 1, "gate", started_at=time.time(), owner=owner)
        release_claim.take(election, name, record)
        result = "won"
        time.sleep(2 * SETTLE_S)  # "drives" while the late contenders look
    except ReleaseBusy as exc:
        assert exc.exit_code == exit_codes.BUSY  # was USAGE; a release in progress is "busy" (issue 25)
        result = f"busy: {exc}"
    with lock:
        outcome[token] = result


def test_exactly_one_of_many_concurrent_starts_wins_whatever_the_interleaving(model):
    rng = random.Random(0)
    lock = threading.Lock()
    for round_ in range(ROUNDS):
        outcome: dict[str, str] = {}
        tokens = [f"r{round_}c{i}-{uuid.uuid4().hex[:6]}" for i in range(CONTENDERS)]
        # round 0: all at the same instant; later rounds: spread over two settle periods
        delays = [0.0 if round_ == 0 else rng.uniform(0, 2 * SETTLE_S) for _ in tokens]
        threads = [
            threading.Thread(target=contend, args=(model, t, d, outcome, lock))
            for t, d in zip(tokens, delays, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [t for t, r in outcome.items() if r == "won"]
        assert len(outcome) == CONTENDERS and len(winners) == 1, (round_, delays, outcome)
        record = release_record.read(model)
        assert record.owner.token == winners[0]
        assert all("busy" in r for t, r in outcome.items() if t != winners[0])
        tags = store.client().get_registered_model(model).tags
        assert not [k for k in tags if k.startswith(release_claim.PREFIX)], tags  # no claim left behind
        release_record.write(record.moved("aborted"))  # the next round starts from an ended release


def test_a_live_owner_keeps_its_release_and_a_dead_ones_can_be_taken(model):
    alive = Owner.me("driver")
    release_record.write(ReleaseRecord(model, 2, model, 1, "shadow", owner=alive))
    with pytest.raises(ReleaseBusy, match="driven by pid"):
        release_claim.elect(model, Owner.me("second"), SETTLE_S, owner_timeout_s=60)
    dead = Owner("elsewhere", 1, time.time() - 600, "crashed")  # another host, silent for 10 minutes
    release_record.write(ReleaseRecord(model, 2, model, 1, "shadow", owner=dead))
    election = release_claim.elect(model, Owner.me("resumer"), SETTLE_S, owner_timeout_s=60)
    assert election.owner.token == "resumer"


def test_a_stale_claim_of_a_crashed_contender_is_swept_and_does_not_block(model):
    c = store.client()
    c.set_registered_model_tag(model, release_claim.PREFIX + "0000-crashed", '{"at": 1.0, "pid": 1}')
    election = release_claim.elect(model, Owner.me("zzz-late"), SETTLE_S, owner_timeout_s=60)
    assert election.owner.token == "zzz-late"
    assert release_claim.PREFIX + "0000-crashed" not in c.get_registered_model(model).tags
