"""What every thin CLI shares: logging set-up and turning expected failures into one clear line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from rich.logging import RichHandler


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


def run_cli(
    fn: Callable[[], int | None],
    expected: tuple[type[BaseException], ...] = (),
    unavailable: tuple[type[BaseException], ...] = (),
) -> None:
    """Run ``fn``; an expected error becomes ``error: ...`` on stderr and exit code 2, not a traceback.

    ``unavailable`` errors (a service that failed or could not be reached) exit with code 3.
    """
    try:
        code = fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
