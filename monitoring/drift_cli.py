"""``cifar10-client drift`` / ``python -m monitoring.drift_cli``: judge the served prediction mix.

The options choose where the counts come from (Triton's ``/metrics`` or Prometheus) and how they are
judged; :mod:`monitoring.drift` holds the reading and the arithmetic. The exit code says the verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import exit_codes
from common.exit_codes import ExitError, UsageError
from monitoring.drift import (
    DEFAULT_METRICS_URL,
    DEFAULT_MIN_COUNT,
    DEFAULT_REFERENCE,
    DEFAULT_THRESHOLD,
    EPSILON,
    Counts,
    delta,
    evaluate,
    load_reference,
    query_prometheus,
    render_table,
    scrape,
)

EXIT_CODES = (
    exit_codes.help_text(
        (
            exit_codes.OK,
            exit_codes.FAILED,
            exit_codes.USAGE,
            exit_codes.UNAVAILABLE,
            exit_codes.TOO_LITTLE_DATA,
        )
    )
    + "  (1 here: some model version's PSI is above --threshold)\n"
)


class DriftUsage(UsageError):
    """Options that cannot name what to compare (exit code 2)."""


def collect(args: argparse.Namespace) -> tuple[Counts, str]:
    """The counts the options ask for, and a one-line description of where they came from."""
    if args.prometheus:
        counts = query_prometheus(args.prometheus, args.range, args.timeout)
        source = f"Prometheus {args.prometheus}, increase over {args.range}"
    elif args.window > 0:
        before = scrape(args.metrics_url, args.timeout)
        time.sleep(args.window)
        counts = delta(before, scrape(args.metrics_url, args.timeout))
        source = f"{args.metrics_url}, change over {args.window:g} s"
    else:
        counts = scrape(args.metrics_url, args.timeout)
        source = f"{args.metrics_url}, cumulative since server start"
    counts = {
        g: v
        for g, v in counts.items()
        if (args.model is None or g[0] == args.model) and (args.version is None or g[1] == args.version)
    }
    return counts, source


def run(args: argparse.Namespace) -> int:
    """The ``drift`` command; raises :class:`~common.exit_codes.ExitError` subclasses on failure."""
    if args.threshold < 0 or args.epsilon <= 0 or args.window < 0:
        raise DriftUsage("--threshold and --window must be >= 0 and --epsilon > 0")
    reference = load_reference(args.reference)
    counts, source = collect(args)
    results = evaluate(counts, reference, args.min_count, args.epsilon)
    drifted = any(r.drifted(args.threshold) for r in results)
    if args.json:
        report: dict[str, Any] = {
            "source": source,
            "reference": str(args.reference),
            "threshold": args.threshold,
            "min_count": args.min_count,
            "drift": drifted,
            "results": [
                {
                    "model": r.model,
                    "version": r.version,
                    "predictions": r.predictions,
                    "psi": r.psi,
                    "chi_square_p": r.p_value,
                    "drift": r.drifted(args.threshold),
                    "classes": {
                        c: {"reference": q, "count": r.observed.get(c, 0.0)} for c, q in reference.items()
                    },
                }
                for r in results
            ],
        }
        print(json.dumps(report, indent=2))
    else:
        print(f"source: {source}; reference: {args.reference}")
        print(render_table(results, reference, args.threshold))
    return exit_codes.FAILED if drifted else exit_codes.OK


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the drift options to ``parser`` (shared by the standalone and the ``client.cli`` entry)."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--metrics-url", default=DEFAULT_METRICS_URL, help="Triton /metrics (%(default)s)")
    src.add_argument("--prometheus", metavar="URL", help="query Prometheus, e.g. http://localhost:9090")
    parser.add_argument("--range", default="30m", help="Prometheus increase() range (default %(default)s)")
    parser.add_argument(
        "--window",
        type=float,
        default=0.0,
        metavar="S",
        help="with --metrics-url: judge the change over S seconds instead of the cumulative counts",
    )
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="meta.json (%(default)s)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="PSI limit (%(default)s)")
    parser.add_argument(
        "--min-count",
        type=float,
        default=DEFAULT_MIN_COUNT,
        help="predictions a model version needs before it is judged (default %(default)s)",
    )
    parser.add_argument("--epsilon", type=float, default=EPSILON, help="floor of every share (%(default)s)")
    parser.add_argument("--model", help="only this classifier (label 'model')")
    parser.add_argument("--version", help="only this version (label 'version')")
    parser.add_argument("--timeout", type=float, default=5.0, help="HTTP timeout in seconds (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``drift`` on a ``client.cli`` sub-parser set; dispatch to :func:`run`."""
    parser = subparsers.add_parser(
        "drift",
        help="PSI of the served prediction mix against the validation class distribution",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.drift_cli",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    args = configure(parser).parse_args(argv)
    try:
        return run(args)
    except ExitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
