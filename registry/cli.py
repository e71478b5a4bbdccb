"""``python -m registry.cli``: register exports, promote, roll back, list and show versions.

Exit codes (the project-wide table, :mod:`common.exit_codes`): 0 done, 1 promotion refused (no
passed parity gate), 2 bad usage or a malformed registry tag, 3 registry unreachable or failing,
5 no such model, version or alias (including a missing ``production`` alias for ``sync``).
Commands that change what serves (``promote``, ``rollback``, ``sync``) never fall back to a guess:
on any of these errors they stop before writing anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from common.cli import run_cli, setup_logging
from registry.sync_result import SyncResult


def _name(args, cfg) -> str:
    return args.model or cfg.registered_name(args.precision)


def sync_from_args(args, params) -> SyncResult:
    """``sync`` as the CLI asks for it (``cifar10-optimize`` reuses it after recording its choice)."""

    from registry.sync import sync
    from serving.server.cli import admin_token
    from serving.server.embedded import ADMIN_HEADER

    if args.kind:
        params = params.replace(serving=params.serving.replace(kind=args.kind))
    token = admin_token(args.admin_token_file)
    if args.server and not token:
        raise ValueError(
            "rolling a live server needs its admin token (--admin-token-file or $CIFAR10_ADMIN_TOKEN)"
        )
    host, trt, arch = None, getattr(args, "tensorrt_version", None), getattr(args, "gpu_arch", None)
    if trt or arch:
        from registry.plan_compat import host_facts

        host = host_facts(tensorrt=trt, compute_capability=arch)
    header = (ADMIN_HEADER, token) if token else None
    return sync(params, args.repository, args.cache, args.server, header, host)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    reg = sub.add_parser("register", help="register every artifact that passed its parity gate")
    reg.add_argument("--manifest", type=Path, default=Path("artifacts/export/manifest.json"))
    reg.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="deprecated and ignored: each version carries the accuracy its own artifact scored at export",
    )
    reg.add_argument("--report", type=Path, default=None, help="write the registered versions here (JSON)")
    reg.add_argument(
        "--promote",
        choices=("production", "staging"),
        default=None,
        help="also point this alias at the new versions",
    )

    for cmd, text in (
        ("promote", "point an alias at a version"),
        ("rollback", "re-point an alias at its previous"),
    ):
        sp = sub.add_parser(cmd, help=text)
        sp.add_argument("--precision", default="fp32", help="served form (fp32, fp16, int8, trt_fp16)")
        sp.add_argument("--model", default=None, help="registered model name (overrides --precision)")
        group = sp.add_mutually_exclusive_group()
        group.add_argument("--alias", default=None)
        group.add_argument("--stage", default=None, help="old MLflow stage name: Production or Staging")
        if cmd == "promote":
            sp.add_argument("--version", type=int, required=True)

    sy = sub.add_parser(
        "sync", help="write the Triton model repository from the aliases (and roll a live server)"
    )
    sy.add_argument("--repository", type=Path, default=Path("model_repository"))
    sy.add_argument(
        "--cache", type=Path, default=Path("artifacts/registry_cache"), help="downloaded artifacts"
    )
    sy.add_argument(
        "--server", default=None, help="gRPC host:port of a running server to roll over (e.g. 127.0.0.1:8001)"
    )
    sy.add_argument(
        "--admin-token-file",
        type=Path,
        default=None,
        help="token unlocking the server's model-repository API (or $CIFAR10_ADMIN_TOKEN)",
    )
    sy.add_argument("--kind", choices=("KIND_CPU", "KIND_GPU"), default=None, help="override serving.kind")
    sy.add_argument(
        "--tensorrt-version",
        default=None,
        help="the serving host's TensorRT (default: from the NGC image compose.yaml pins)",
    )
    sy.add_argument(
        "--gpu-arch",
        default=None,
        help="the serving GPU's compute capability, e.g. 9.0 (default: nvidia-smi on this host)",
    )

    imp = sub.add_parser(
        "import-run", help="replay a training run folder (made where MLflow was missing) into MLflow"
    )
    imp.add_argument("folder", type=Path, help="the run folder (train --run-folder, or run.tar.gz unpacked)")
    imp.add_argument(
        "--run-file", type=Path, default=None, help="write {run_id} here, for `cifar10-export --run-file`"
    )
    unp = sub.add_parser(
        "unpack", help="check and unpack weights packed on the GPU machine (fp32 safetensors)"
    )
    unp.add_argument("pack_dir", type=Path, help="folder with pack.json and its weights.pack.NNN parts")
    unp.add_argument("--out", type=Path, required=True, help="the fp32 safetensors to write")

    for cmd, text in (
        ("list", "every registered version"),
        ("show", "one registered model, with alias history"),
    ):
        sp = sub.add_parser(cmd, help=f"{text} (a table; --json for machines)")
        sp.add_argument("--precision", default="fp32")
        sp.add_argument("--model", default=None)
        sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    setup_logging(args.verbose)

    def go() -> None:
        from common.params import load_params
        from registry import aliases, store
        from registry.aliases import alias_for

        params = load_params(args.params)
        cfg = params.registry
        if args.command == "register":
            if args.metrics is not None:
                logging.getLogger(__name__).warning(
                    "--metrics is ignored: the training run's PyTorch figure is not the accuracy of an "
                    "exported artifact; each version is tagged with its own, measured at export"
                )
            rows = store.register_manifest(args.manifest, cfg)
            if args.promote:
                for row in rows:
                    if row["version"] is not None:
                        row[args.promote] = aliases.promote(row["name"], args.promote, row["version"])[
                            "version"
                        ]
            if args.report:
                from common.fsutil import write_json

                write_json(args.report, {"versions": rows})
            out = rows
        elif args.command == "promote":
            alias = alias_for(args.alias or (None if args.stage else "production"), args.stage)
            out = aliases.promote(_name(args, cfg), alias, args.version)
        elif args.command == "rollback":
            alias = alias_for(args.alias or (None if args.stage else "production"), args.stage)
            out = aliases.rollback(_name(args, cfg), alias)
        elif args.command == "sync":
            out = sync_from_args(args, params).model_dump(mode="json")
        elif args.command == "import-run":
            from common.fsutil import write_json
            from common.run_folder import import_run

            run_id, created = import_run(args.folder)
            out = {"run_id": run_id, "created": created}
            if args.run_file:
                write_json(args.run_file, {"run_id": run_id})
        elif args.command == "unpack":
            from training.weight_pack import unpack

            out = {"weights": str(unpack(args.pack_dir, args.out))}
        elif args.command in ("show", "list"):
            from registry import catalog, tables

            out = catalog.describe(_name(args, cfg)) if args.command == "show" else catalog.list_models(cfg)
            if not args.json:
                (tables.print_show if args.command == "show" else tables.print_list)(out)
                return
        json.dump(out, sys.stdout, indent=2)
        print()

    from mlflow.exceptions import MlflowException

    from common import exit_codes

    try:
        run_cli(go, (ValueError, FileNotFoundError))
    except MlflowException as exc:
        print(f"error: MLflow registry unavailable: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(exit_codes.UNAVAILABLE)


if __name__ == "__main__":
    main()
