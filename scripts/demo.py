"""``python -m scripts.demo``: after ``dvc repro``, put the new model into service and check it.

The rest of the main job, in the order an operator would do it by hand: promote the versions the
pipeline just registered to ``production`` (only through the release gate once something serves:
:mod:`scripts.demo_adopt`), ``sync`` the Triton model repository from the registry, start the
embedded ``tritonserver``, send a first request over HTTP and gRPC, run the client's offline
evaluation of exactly the version ``production`` names, and end with a map of what to look at and
run next (:mod:`scripts.demo_map`). The server is stopped at the end unless ``--keep-serving``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path


def first_request(http_endpoint: str, grpc_endpoint: str, image: Path) -> dict:
    """Classify one encoded image through the ``cifar10`` ensemble over both protocols (top 3)."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from client.core.transport import image_batch, parse_classification

    blob = image_batch([image.read_bytes()])
    answers = {}
    for name, module, url in (("http", httpclient, http_endpoint), ("grpc", grpcclient, grpc_endpoint)):
        client = module.InferenceServerClient(url)
        inp = module.InferInput("IMAGE", list(blob.shape), "BYTES")
        inp.set_data_from_numpy(blob)
        out = module.InferRequestedOutput("PROBABILITIES", class_count=3)
        labels, probs, _ = parse_classification(
            client.infer("cifar10", [inp], outputs=[out]).as_numpy("PROBABILITIES")[0]
        )
        answers[name] = dict(zip(labels, [round(p, 4) for p in probs], strict=True))
        client.close()
    return {"image": str(image), "true_class": image.parent.name, "top_k": answers}


def pyfunc_answer(name: str, image: Path) -> dict:
    """The same image through MLflow's route: the production version's pyfunc (docs/mlflow-models.md)."""
    import mlflow
    import pandas as pd

    uri = f"models:/{name}@production"
    out = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"image": [image.read_bytes()]}))
    top = float(max(out["probabilities"][0]))
    return {"mlflow_pyfunc": uri, "label": out["label"][0], "probability": round(top, 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--registered", type=Path, default=Path("reports/registered.json"))
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument("--images", type=Path, default=Path("data/prepared/test_images"))
    p.add_argument("--per-class", type=int, default=100, help="offline evaluation: images per class")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--keep-serving", action="store_true", help="leave the server up until Ctrl-C")
    args = p.parse_args(argv)

    from common.cli import setup_logging
    from common.params import load_params
    from common.tracking import tracking_uri
    from registry.sync import sync
    from scripts.demo_adopt import adopt
    from scripts.demo_map import print_map
    from serving.server.embedded import ADMIN_HEADER, EmbeddedServer, ServerConfig

    setup_logging()
    params = load_params(args.params)
    cfg = params.registry
    serve_names = {cfg.registered_name(form) for form in cfg.serve}
    adoptions = []
    for row in json.loads(args.registered.read_text())["versions"]:
        if row["version"] is not None and row["name"] in serve_names:
            adoptions.append(adopt(row["name"], row["version"], params.release))
            print(adoptions[-1].line(), flush=True)
    print(sync(params, args.repository, Path("artifacts/registry_cache")).model_dump_json())

    token = secrets.token_urlsafe(16)
    token_file = Path(".triton-token").absolute()  # for `sync --server`; the token itself is never printed
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with looser permissions
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    config = ServerConfig(
        model_repository=args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_file=Path("artifacts/triton/tritonserver.log").absolute(),
        restricted_header=(ADMIN_HEADER, token),
    )
    config.log_file.parent.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer(config) as server:
        endpoints = {"HTTP": server.url_http, "gRPC": server.url_grpc, "metrics": server.url_metrics}
        print(f"tritonserver ready: HTTP {server.url_http}, gRPC {server.url_grpc}")
        print(f"metrics: {server.url_metrics}")
        image = sorted(args.images.rglob("*.*"))[0]
        print(json.dumps(first_request(server.http_endpoint, server.url_grpc.removeprefix("grpc://"), image)))
        print(json.dumps(pyfunc_answer(cfg.registered_name(cfg.ensemble_target), image)))
        cmd = [
            sys.executable,
            "-m",
            "commands",
            "client",
            "offline-eval",
            "--url",
            server.http_endpoint,
            "--grpc-url",
            server.url_grpc.removeprefix("grpc://"),
            "--images",
            str(args.images),
            "--per-class",
            str(args.per_class),
            "--params",
            str(args.params),
        ]
        code = subprocess.call(cmd, env=os.environ)
        if code != 0:
            print(f"offline evaluation failed with exit code {code}", file=sys.stderr)
            return code
        # What production knows without labels, from the same traffic: the estimate and input drift.
        status = [sys.executable, "-m", "commands", "monitor", "status", "--metrics-url", server.url_metrics]
        status += ["--params", str(args.params)]
        verdict = subprocess.call(status, env=os.environ)
        print(f"monitor status exited {verdict} (0: no alert, 1: an alert condition, 7: too few images)")
        print_map(adoptions, endpoints, tracking_uri(), still_serving=args.keep_serving)
        if args.keep_serving:
            print(
                f"serving; roll it with `cifar10 registry sync --server {server.url_grpc} "
                f"--admin-token-file {token_file}`. Ctrl-C stops."
            )
            with contextlib.suppress(KeyboardInterrupt):
                server.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
