"""The one error table: each exit code, what it means, and the one exception class that carries it.

Scripts (CI smoke tests, cron jobs, rollout gates) branch on *why* a command failed, so each kind of
failure has its own code, the same in ``cifar10 data prepare`` as in ``cifar10 client batch``. A
package raises one of the classes below, or a subclass of one where a caller catches that subclass
(``RegistryUnavailable``, ``ReleaseBusy``); the code comes from the class it extends, never from the
text of its message. The docs' table is :data:`TABLE`; a test keeps the two identical.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # the command ran, and its result is bad: images failed, drift found, gate failed, server died
USAGE = 2  # bad options or input: a missing file, a malformed tag or params.yaml, a bad image folder
UNAVAILABLE = 3  # a service needed is unreachable or failing: Triton, the MLflow registry, Prometheus
NOT_READY = 4  # the server answers, but the model (or that version of it) is not ready
NOT_FOUND = 5  # the registry has no such model, version or alias
MISMATCH = 6  # the server serves another version than the registry names
TOO_LITTLE_DATA = 7  # nothing (or too little) to judge yet: too few predictions for a drift verdict
INTEGRITY = 8  # a file is not what was recorded: a checksum mismatch, a path escaping its folder
BUSY = 9  # someone else holds what this needs (the repository lock, a release); try again later
INTERRUPTED = 130

TABLE = {
    OK: "ok",
    FAILED: "finished, but the result is bad (images failed, drift, a gate failed, training diverged)",
    USAGE: "bad usage or input (unknown option, missing file or folder, malformed params.yaml or tag)",
    UNAVAILABLE: "a service is unreachable or failing (Triton, the MLflow registry, Prometheus, a download)",
    NOT_READY: "the model, or that version of it, is not ready on the server",
    NOT_FOUND: "the registry has no such model, version or alias",
    MISMATCH: "the server serves another version than the registry names",
    TOO_LITTLE_DATA: "too little data to judge (too few predictions for a drift verdict)",
    INTEGRITY: "integrity: a file is not what was recorded (checksum mismatch, path escaping its folder)",
    BUSY: "busy: another process holds the repository lock or the release; try again",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def help_text(codes: tuple[int, ...] = tuple(TABLE)) -> str:
    """``exit codes:`` lines for an ``--help`` epilog."""
    return "exit codes:\n" + "".join(f"  {code:<3} {TABLE[code]}\n" for code in codes)


class ExitError(RuntimeError):
    """An expected failure: one line of message and the exit code that says what kind it is."""

    exit_code = FAILED


class Failed(ExitError):
    """The command ran, and its result is bad."""

    exit_code = FAILED


class UsageError(ExitError, ValueError):
    """Bad options or input."""

    exit_code = USAGE


class Unavailable(ExitError):
    """A service needed is unreachable or failing."""

    exit_code = UNAVAILABLE


class NotReady(ExitError):
    """The server answers, but the model (or that version of it) is not ready."""

    exit_code = NOT_READY


class NotFound(ExitError):
    """The registry has no such model, version or alias."""

    exit_code = NOT_FOUND


class Mismatch(ExitError):
    """The server serves another version than the registry names."""

    exit_code = MISMATCH


class TooLittleData(ExitError):
    """Nothing, or too little, to judge yet."""

    exit_code = TOO_LITTLE_DATA


class IntegrityError(ExitError):
    """A file is not what was recorded: its checksum differs, or its path leaves its folder."""

    exit_code = INTEGRITY


class Busy(ExitError):
    """Another process holds what this needs; nothing was changed, and trying again may succeed."""

    exit_code = BUSY


CLASSES: dict[int, type[ExitError]] = {
    FAILED: Failed, USAGE: UsageError, UNAVAILABLE: Unavailable, NOT_READY: NotReady, NOT_FOUND: NotFound,
    MISMATCH: Mismatch, TOO_LITTLE_DATA: TooLittleData, INTEGRITY: IntegrityError, BUSY: Busy,
}  # fmt: skip
