"""``cifar10-tune``: run (or continue) the Optuna study, and train its best settings with DVC.

run     the study of the active profile (``tune`` in params.yaml) to its budget; writes
        reports/tune/{summary.json, best_params.json, *.png} and logs the study to MLflow
        (experiment ``cifar10-tune``: the study a parent run, each trial a nested run).
        Killed? Run it again: finished trials are kept and not repeated.
apply   ``dvc exp run -S profiles.<profile>.<key>=<value> ...`` with the best trial's settings:
        the full pipeline trained with them, as a DVC experiment (``--dry-run`` prints it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from common.cli import run_cli, setup_logging


def apply_command(best_file: Path, extra: list[str] | None = None) -> list[str]:
    """The ``dvc exp run`` command line that trains the best trial's settings fully."""
    best = json.loads(best_file.read_text())
    command = ["dvc", "exp", "run"]
    for override in best["overrides"]:
        command += ["-S", override]
    return command + list(extra or [])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--profile", default=None, help="override params.yaml's profile key")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run or continue the study")
    r.add_argument("--data", type=Path, default=Path("data/prepared"))
    r.add_argument("--out", type=Path, default=Path("reports/tune"))
    r.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite of tune.storage)")
    a = sub.add_parser("apply", help="train the best settings fully: dvc exp run -S ...")
    a.add_argument("--best", type=Path, default=Path("reports/tune/best_params.json"))
    a.add_argument("--dry-run", action="store_true", help="print the command only")
    a.add_argument("dvc_args", nargs="*", help="passed on to dvc exp run (e.g. --name tuned)")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def go() -> int:
        if args.command == "apply":
            command = apply_command(args.best, args.dvc_args)
            print(shlex.join(command), flush=True)
            return 0 if args.dry_run else subprocess.call(command)
        from common.params import load_params
        from tuning.study import run_study

        summary = run_study(load_params(args.params, args.profile), args.data, args.out, args.storage)
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0

    run_cli(go, (ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
