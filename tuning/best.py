"""The best trial's settings, trained fully: the ``dvc exp run -S ...`` command line they make."""

from __future__ import annotations

import json
from pathlib import Path


def dvc_apply_command(best_file: Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``dvc exp run`` command line that trains the best trial's settings (``best_params.json``) fully."""
    best = json.loads(best_file.read_text())
    command = ["dvc", "exp", "run"]
    for override in best["overrides"]:
        command += ["-S", override]
    return command + list(extra)
