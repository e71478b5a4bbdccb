"""One error table: each exit code has one class, every expected failure extends one of them."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest

from common import exit_codes
from common.exit_codes import ExitError
from registry.store import ArtifactAltered
from serving.repository.atomic_fs import RepositoryBusy, repository_lock
from training.engine import TrainingDiverged
from training.sources import ChecksumMismatch, DataError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("commands", "common", "training", "export", "registry", "serving", "client", "monitoring",
            "optimize", "release", "tuning")  # fmt: skip


def _classes():
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    yield path.relative_to(ROOT), node


def test_each_code_has_one_class_and_the_table_says_what_it_means():
    assert set(exit_codes.CLASSES) == set(exit_codes.TABLE) - {exit_codes.OK, exit_codes.INTERRUPTED}
    for code, cls in exit_codes.CLASSES.items():
        assert cls.exit_code == code and issubclass(cls, ExitError)


def test_codes_come_from_the_table_classes_only():
    """No class outside the table sets ``exit_code``: a subclass takes the code of what it extends."""
    setters = [
        f"{path}:{node.name}"
        for path, node in _classes()
        if path != Path("common/exit_codes.py")
        for item in node.body
        if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "exit_code" for t in item.targets)
    ]
    assert not setters


def test_no_two_error_classes_share_a_name():
    names = [
        node.name for _, node in _classes() if node.name.endswith(("Error", "Unavailable", "Unreachable"))
    ]
    assert sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize(
    "error,code",
    [
        (TrainingDiverged("non-finite training loss"), exit_codes.FAILED),  # a bad result, not bad usage
        (ArtifactAltered("does not match the checksum"), exit_codes.INTEGRITY),
        (ChecksumMismatch("checksum mismatch"), exit_codes.INTEGRITY),
        (RepositoryBusy("being rewritten"), exit_codes.BUSY),
        (DataError("no train/ folder"), exit_codes.USAGE),
    ],
)
def test_the_codes_that_were_wrong(error, code):
    assert error.exit_code == code


def test_a_diverged_loss_is_still_a_floating_point_error_for_its_callers():
    assert issubclass(TrainingDiverged, FloatingPointError)


def test_the_repository_lock_waits_its_timeout_then_says_busy(tmp_path):
    """A typed error after a bounded wait; nobody matches the message's text any more."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with repository_lock(tmp_path / "repo"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    started = time.monotonic()
    with pytest.raises(RepositoryBusy) as busy, repository_lock(tmp_path / "repo", timeout_s=0.3):
        pass
    assert time.monotonic() - started >= 0.3 and busy.value.exit_code == exit_codes.BUSY
    threading.Timer(0.2, release.set).start()
    with repository_lock(tmp_path / "repo", timeout_s=10):  # the holder lets go within the wait
        pass
    thread.join(10)
