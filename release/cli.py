"""``cifar10-release``: move a registry version to production through gate, shadow and canary steps.

  start --version N   gate (parity, accuracy vs production, answers on the live server), then shadow,
                      then the canary weights of params.yaml, then production; a breach rolls back
                      and exits 1. Run it again after a crash: it resumes at the recorded step.
  status              the step, its window, and the live figures against their limits
  abort               back to production at once (a running controller stops at its next check)
  report              per-version table and PNG over the latest release (from Prometheus)

Exit codes: 0 promoted (start) / done; 1 the gate refused or a step breached (rolled back) or the
release was aborted elsewhere; 2 bad usage, or another release (or a live owner, or a start that
claimed it at the same instant) is in the way;
3 registry, server or Prometheus unavailable; 5 no such version, alias or release.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from common.cli import run_cli, setup_logging

log = logging.getLogger("release")


def context(args: argparse.Namespace):
    from common.params import load_params
    from common.promql import Prometheus
    from release.controller import Context
    from serving.server.cli import admin_token
    from serving.server.embedded import ADMIN_HEADER

    params = load_params(args.params)
    token = admin_token(args.admin_token_file)
    root = args.params.resolve().parent  # the project: where sync, serve and DVC keep these too
    return Context(
        params=params,
        repository=args.repository or root / "model_repository",
        cache=args.cache or root / "artifacts" / "registry_cache",
        server=args.server,
        header=(ADMIN_HEADER, token) if token else None,
        prometheus=Prometheus(args.prometheus or params.release.prometheus_url),
        experiment=args.experiment,
        prepared=args.prepared or root / "data" / "prepared",
    )


def status(ctx) -> dict:
    from registry import release_record
    from release.context import window as step_window
    from release.controller import step_of
    from release.judge import judge

    name = ctx.params.registry.registered_name(ctx.form)
    record = release_record.read(name)
    if record is None:
        return {"release": None}
    out = {
        "candidate": f"{record.candidate_name} v{record.candidate_version}",
        "production": f"{record.production_name} v{record.production_version}",
        "step": record.label,
        "forced_reason": record.forced_reason or None,
        "limits": record.limits or None,
    }
    if not record.active:
        return out | {"ended": record.log[-1] if record.log else None}
    owner = record.owner
    cfg = ctx.params.release
    out["owner"] = owner and {
        "host": owner.host,
        "pid": owner.pid,
        "heartbeat_s_ago": round(time.time() - owner.heartbeat, 1),
        "alive": owner.alive(cfg.owner_timeout_s),
    }
    if record.step == "gate":
        return out
    length = step_window(ctx, record.step)
    out["window"] = {"elapsed_s": round(time.time() - record.step_started_at, 1), "length_s": length}
    step = step_of(ctx, record, record.step_started_at + cfg.latency_settle_s)
    verdict, _ = judge(ctx.prometheus, step, cfg, time.time(), None)
    out["candidate_images"] = round(verdict.images)
    out["figures"] = [f.row() for f in verdict.figures]
    return out


def report(ctx, out: Path) -> dict:
    from registry import release_record
    from release import report as release_report

    name = ctx.params.registry.registered_name(ctx.form)
    record = release_record.read(name)
    if record is None:
        from registry.store import RegistryError

        raise RegistryError(f"no release recorded on {name}")
    end = time.time() if record.active else record.log[-1]["at"] + 5
    from release.context import triton_model

    models = (triton_model(ctx, record.production_name), triton_model(ctx, record.candidate_name))
    files = release_report.write(ctx.prometheus, record, models, out, end)
    if record.run_id:
        from release.tracking import _client

        for path in files.values():
            _client().log_artifact(record.run_id, str(path), "report")
    rows = json.loads(files["json"].read_text())["versions"]
    _print_table(rows)
    return {k: str(v) for k, v in files.items()}


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="release, per version")
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)] if rows else []
    for key in keys:
        table.add_column(key)
    for row in rows:
        table.add_row(*("-" if row[k] is None else str(row[k]) for k in keys))
    console = Console(stderr=True)
    console.print(table)
    for row in rows:
        if row.get("class_agreement"):
            shares = ", ".join(f"{c} {v:.3f}" for c, v in row["class_agreement"].items())
            console.print(f"{row['role']} v{row['version']} shadow agreement per class: {shares}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="cifar10-release", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument(
        "--repository",
        type=Path,
        help="the served model repository (default: model_repository/ beside --params)",
    )
    p.add_argument(
        "--cache", type=Path, help="artifacts (default: artifacts/registry_cache/ beside --params)"
    )
    p.add_argument(
        "--prepared",
        type=Path,
        help="prepared data, to score production on the candidate's test rows (default: data/prepared/)",
    )
    p.add_argument("--server", default="127.0.0.1:8001", help="gRPC host:port of the live server")
    p.add_argument("--admin-token-file", type=Path, help="its admin token (or $CIFAR10_ADMIN_TOKEN)")
    p.add_argument("--prometheus", help="Prometheus URL (default: params.yaml release.prometheus_url)")
    p.add_argument("--experiment", default="cifar10-release", help="MLflow experiment of the release runs")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    st = sub.add_parser("start", help="gate, shadow, canary, promote (or resume the release in progress)")
    st.add_argument("--version", type=int, required=True)
    st.add_argument(
        "--precision", help="the candidate's form (default: the one the ensemble routes to), e.g. int8"
    )
    st.add_argument("--force", action="store_true", help="start even if the accuracy or live gate refuses")
    st.add_argument("--reason", help="why --force (required with it; recorded in the registry and MLflow)")
    sub.add_parser("status", help="the current step and its live figures against their limits")
    ab = sub.add_parser("abort", help="back to production at once")
    ab.add_argument("--reason", default="aborted by hand")
    rp = sub.add_parser("report", help="per-version table and PNG over the latest release")
    rp.add_argument("--out", type=Path, default=Path("reports/release"))
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    from rich.console import Console

    for handler in logging.getLogger().handlers:  # stdout carries the JSON answer; the story goes to stderr
        if hasattr(handler, "console"):
            handler.console = Console(stderr=True)

    def go() -> int:
        from release import controller

        if args.command == "start" and args.force and not (args.reason or "").strip():
            raise ValueError("--force needs --reason: it is recorded with the release")
        ctx = context(args)
        if args.command == "start":
            out = controller.start(ctx, args.version, args.precision, args.reason if args.force else None)
        elif args.command == "status":
            out = status(ctx)
        elif args.command == "abort":
            out = controller.abort(ctx, args.reason)
        else:
            out = report(ctx, args.out)
        print(json.dumps(out, indent=2, default=str))
        return 0

    run_cli(go, expected=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    main()
