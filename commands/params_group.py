"""``cifar10 params check|show``: validate a params file, and print every setting with its origin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from commands.main import JSON, PARAMS, PROFILE, SET
from common.params import Resolved, resolve


def _leaves(value: Any, at: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key, inner in value.items() for leaf in _leaves(inner, f"{at}.{key}" if at else key)]
    return [(at, value)]


def settings(resolved: Resolved) -> list[tuple[str, Any, str]]:
    """``(key as written in params.yaml, value, source)`` for every setting the run uses."""
    params, name = resolved.params, resolved.params.profile
    dumped = params.model_dump(mode="json", exclude={"raw"})
    budget = dumped["tune"].pop("budget")
    places = {"model": f"profiles.{name}.model", "train": f"profiles.{name}.train"}
    rows = [("profile", name, resolved.sources.get("profile", "?"))]
    for section, values in dumped.items():
        if section != "profile":
            rows += [(k, v, "") for k, v in _leaves(values, places.get(section, section))]
    rows += [(k, v, "") for k, v in _leaves(budget, f"tune.profiles.{name}")]
    return [(k, v, s or _source(resolved.sources, k)) for k, v, s in rows]


def _source(sources: dict[str, str], key: str) -> str:
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return "?"


@click.group()
def params() -> None:
    """Check and show the settings (params.yaml over the project's, CIFAR10_* variables, --set)."""


@params.command()
@PARAMS
@PROFILE
@SET
def check(params_file: Path, profile: str | None, sets: tuple[str, ...]) -> None:
    """Validate the settings; exit 2 with the key's path and the bad value if one is wrong."""
    resolved = resolve(params_file, profile, sets)
    click.echo(f"ok: {params_file} (profile {resolved.params.profile})")


@params.command()
@PARAMS
@PROFILE
@SET
@JSON
def show(params_file: Path, profile: str | None, sets: tuple[str, ...], as_json: bool) -> None:
    """Print every resolved setting and where its value came from (a file, a variable, --set)."""
    rows = settings(resolve(params_file, profile, sets))
    if as_json:
        click.echo(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], indent=1))
        return
    for key, value, source in rows:  # one setting a line: fits 80 columns unlike a table would
        click.echo(f"{key} = {json.dumps(value)}  # {source}")


@params.command()
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True,
    help="where the pages go.",
)  # fmt: skip
@click.option("--check", is_flag=True, help="exit 1 if a page differs; write nothing.")
def reference(out: Path, check: bool) -> None:
    """Write the configuration reference and exit-code pages from the schema and the error table."""
    import sys

    from common.params_reference import PAGES

    stale = [
        name
        for name, page in PAGES.items()
        if not (out / name).is_file() or (out / name).read_text() != page()
    ]
    if check:
        for name in stale:
            click.echo(f"{out / name} is stale: run cifar10 params reference", err=True)
        sys.exit(1 if stale else 0)
    for name in stale:
        (out / name).write_text(PAGES[name]())
        click.echo(f"wrote {out / name}")
