"""What every thin CLI shares: logging set-up and turning expected failures into one clear line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from rich.logging import RichHandler

from common import exit_codes
from common.exit_codes import ExitError


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in (
        "alembic",
        "urllib3",
        "git",
        "mlflow.store",
        "matplotlib",
        "PIL",
        "onnxscript",
        "onnx_ir",
        "torch.onnx",
        "torch.export",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(fn: Callable[[], int | None], expected: tuple[type[BaseException], ...] = ()) -> None:
    """Run ``fn`` and exit with its code; failures become one ``error: ...`` line, not a traceback.

    An :class:`~common.exit_codes.ExitError` exits with its own code (the project-wide table);
    other ``expected`` exceptions are bad usage or input (code 2).
    """
    try:
        code = fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(exit_codes.INTERRUPTED)
    except ExitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exit_codes.USAGE)
    sys.exit(code or 0)
