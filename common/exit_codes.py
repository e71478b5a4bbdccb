"""Exit codes that mean one thing across every CLI of the project, and the error that carries one.

Scripts (CI smoke tests, cron jobs, rollout gates) branch on *why* a command failed, so each kind of
failure has its own code, the same in ``cifar10-prepare`` as in ``cifar10-client``. The README's
table is :data:`TABLE`; a test keeps the two identical.
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
INTERRUPTED = 130

TABLE = {
    OK: "ok",
    FAILED: "finished, but the result is bad (some images failed, drift above the threshold, a gate failed)",
    USAGE: "bad usage or input (unknown option, missing file or folder, malformed params.yaml or tag)",
    UNAVAILABLE: "a service is unreachable or failing (Triton, the MLflow registry, Prometheus, a download)",
    NOT_READY: "the model, or that version of it, is not ready on the server",
    NOT_FOUND: "the registry has no such model, version or alias",
    MISMATCH: "the server serves another version than the registry names",
    TOO_LITTLE_DATA: "too little data to judge (too few predictions for a drift verdict)",
    INTERRUPTED: "interrupted (Ctrl-C)",
}


def help_text(codes: tuple[int, ...] = tuple(TABLE)) -> str:
    """``exit codes:`` lines for an ``--help`` epilog."""
    return "exit codes:\n" + "".join(f"  {code:<3} {TABLE[code]}\n" for code in codes)


class ExitError(RuntimeError):
    """An expected failure: one line of message and the exit code that says what kind it is."""

    exit_code = FAILED
