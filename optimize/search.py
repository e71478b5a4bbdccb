"""Measure every candidate through a real server: one ``tritonserver``, one rollout per candidate.

The server is private to the search (its own ports and repository, built from the registry exactly as
``sync`` builds the live one), so measuring never disturbs what serves. Each candidate is reached with
:func:`serving.rollout.apply`, the same rollout ``sync --server`` uses, and measured through the public
``cifar10`` ensemble with encoded images, several per request: the path callers take, python steps
included. A form's versions are its registry ``production`` ones; the registry only holds versions
that passed their parity gate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from client.tools.load_bench import measure_images
from common.params import ALL_PRECISIONS, Params
from optimize.objective import Candidate, Row, grid
from registry import aliases, serving_choice, tags
from registry.sync import desired_spec
from serving.repository.build import build_repository
from serving.repository.spec import RepositorySpec
from serving.rollout.apply import apply
from serving.server.embedded import EmbeddedServer, private_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Form:
    precision: str
    version: int
    accuracy: float | None


def forms(params: Params) -> list[Form]:
    """Every registered form with a ``production`` version, and that version's test accuracy."""
    out = []
    for precision in serving_choice.candidates(params.registry, ALL_PRECISIONS):
        name = params.registry.registered_name(precision)
        version = aliases.alias_version(name, "production")
        if version is None:
            log.warning("%s has no production version: not measured", name)
            continue
        measured = tags.accuracy(aliases.resolve(name, version=version).tags)
        out.append(Form(precision, version, measured[0] if measured else None))
    return out


def with_candidate(base: RepositorySpec, candidate: Candidate, triton_name: str) -> RepositorySpec:
    """``base`` with the ensemble routed to the candidate's form, batched as the candidate says."""
    models = tuple(
        dataclasses.replace(
            m,
            preferred_batch_sizes=candidate.preferred_batch_sizes,
            max_queue_delay_us=candidate.max_queue_delay_us,
            instance_count=candidate.instance_count,
        )
        if m.name == triton_name
        else m
        for m in base.classifiers
    )
    return dataclasses.replace(base, classifiers=models, ensemble_target=triton_name)


def run_search(
    params: Params, cache: Path, workdir: Path, images: list[bytes], backend_dir: Path | None = None
) -> tuple[list[Row], Form | None]:
    """Measure the grid for every form; returns the rows (unjudged) and the fp32 baseline form.

    ``backend_dir``: Triton's own backends (e.g. ``/opt/tritonserver/backends`` in the NGC image,
    with ``$CIFAR10_TRITONSERVER`` naming its binary) instead of the embedded server's python ones.
    """
    found = forms(params)
    if not found:
        raise ValueError("no registered form has a production version: register and promote one first")
    reg = params.registry
    by_precision = {f.precision: f for f in found}
    everything = reg.replace(
        serve=tuple(by_precision),
        ensemble_target="fp32" if "fp32" in by_precision else found[0].precision,
    )
    desired = desired_spec(params.replace(registry=everything), cache, honour_choice=False)
    base = desired.spec
    max_batch = {p: desired.summary.forms[reg.registered_name(p)].max_batch for p in by_precision}
    candidates = grid(params.optimize, list(by_precision), max_batch)
    cfg = params.optimize
    repository = workdir / "repository"
    build_repository(base, repository)
    config = private_config(repository, workdir, exit_timeout_s=5, backend_dir=backend_dir)
    rows: list[Row] = []
    with EmbeddedServer(config) as server:
        server.wait_ready(300)
        deployed = base
        for n, candidate in enumerate(candidates, 1):
            spec = with_candidate(base, candidate, reg.triton_name(candidate.precision))
            apply(server.url_grpc, deployed, spec, config.restricted_header, repository, settle_s=0.0)
            deployed = spec
            result = asyncio.run(
                measure_images(
                    server.url_grpc,
                    spec.ensemble_name,
                    images,
                    cfg.images_per_request,
                    cfg.concurrency,
                    cfg.seconds,
                    cfg.warmup_s,
                )
            )
            form = by_precision[candidate.precision]
            row = Row(
                candidate,
                form.version,
                form.accuracy,
                throughput_img_s=result["throughput_img_s"],
                p50_ms=result["p50_ms"],
                p99_ms=result["p99_ms"],
                errors=result["errors"],
            )
            log.info(
                "[%d/%d] %s: %.1f img/s, p50 %s ms, p99 %s ms, %d errors",
                n,
                len(candidates),
                candidate.label,
                row.throughput_img_s,
                row.p50_ms,
                row.p99_ms,
                row.errors,
            )
            rows.append(row)
    return rows, by_precision.get("fp32")
