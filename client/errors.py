"""Exit codes and the exceptions that map onto them.

Scripts (CI smoke tests, cron jobs, rollout gates) branch on *why* a client run failed, so each
failure class has its own exit code instead of a generic 1, and each error carries a one-line message.
"""

from __future__ import annotations

OK = 0
PARTIAL = 1
USAGE = 2
UNREACHABLE = 3
NOT_READY = 4
REGISTRY = 5
VERSION_MISMATCH = 6

EXIT_CODES_HELP = """\
exit codes:
  0  ok
  1  finished, but some images failed after retries (see summary.json / predictions.csv)
  2  bad usage or input (unknown option, missing folder, unlabelled folder for evaluation, ...)
  3  server unreachable within --timeout
  4  model (or model version) not ready on the server
  5  registered model or alias missing in the MLflow registry
  6  the server serves a different version than the registry names
"""


class ClientError(RuntimeError):
    """Base class: an expected failure with a one-line message and an exit code."""

    exit_code = PARTIAL


class UsageError(ClientError, ValueError):
    """Bad options or input data (exit code 2)."""

    exit_code = USAGE


class ServerUnreachable(ClientError):
    """No answer from the server's health endpoint within the timeout (exit code 3)."""

    exit_code = UNREACHABLE


class ModelNotReady(ClientError):
    """The server is up but the model/version is not loaded and ready (exit code 4)."""

    exit_code = NOT_READY


class RegistryMissing(ClientError):
    """The registered model, its version or its alias does not exist (exit code 5)."""

    exit_code = REGISTRY


class VersionMismatch(ClientError):
    """The server would answer with another version than the registry names (exit code 6)."""

    exit_code = VERSION_MISMATCH
