"""The client's expected failures, each mapped onto the project-wide exit codes.

Scripts branch on *why* a client run failed (see :mod:`common.exit_codes`), so each failure class
carries its exit code and a one-line message, never a traceback.
"""

from __future__ import annotations

from common import exit_codes
from common.exit_codes import ExitError, Mismatch, NotFound, NotReady, Unavailable, UsageError

EXIT_CODES_HELP = exit_codes.help_text(
    (
        exit_codes.OK,
        exit_codes.FAILED,
        exit_codes.USAGE,
        exit_codes.UNAVAILABLE,
        exit_codes.NOT_READY,
        exit_codes.NOT_FOUND,
        exit_codes.MISMATCH,
        exit_codes.TOO_LITTLE_DATA,
        exit_codes.INTEGRITY,
    )
)


class ClientError(ExitError):
    """Base class: an expected failure with a one-line message and an exit code (1 unless narrower)."""


class BadInput(UsageError, ClientError):
    """Bad options or input data (exit code 2)."""


class ServerUnreachable(Unavailable, ClientError):
    """No answer from the server (or metrics source) within the timeout (exit code 3)."""


class ModelNotReady(NotReady, ClientError):
    """The server is up but the model/version is not loaded and ready (exit code 4)."""


class RegistryMissing(NotFound, ClientError):
    """The registered model, its version or its alias does not exist (exit code 5)."""


class VersionMismatch(Mismatch, ClientError):
    """The server would answer with another version than the registry names (exit code 6)."""
