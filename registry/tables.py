"""``cifar10 registry list``/``show`` for people: rich tables of :mod:`registry.catalog`'s descriptions.

One row per version, so the question a person brings ("what serves, how good is it, can I trust it,
where did it come from") is answered on one screen; ``--json`` prints the same facts for machines.
A terminal too narrow for the table (80 columns, say) gets one vertical record per version instead
of columns cut to "product…".
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


def _accuracy(row: dict) -> str:
    if row["test_accuracy"] == "unknown":
        return "unknown"
    return f"{100 * float(row['test_accuracy']):.2f} % of {row['test_images']:,}"


def _parity(row: dict) -> Text:
    if not row["parity_passed"]:
        return Text("failed", style="bold red")
    agreement = row.get("parity_agreement")
    top1 = f"{100 * float(agreement):.1f} % top-1" if agreement else "top-1 ?"
    return Text(f"passed · {top1} · max |Δ| {row.get('parity_max_abs_logit') or '?'}", style="green")


def _source(source: dict) -> str:
    if source["kind"] == "training run":
        return f"training run {source['run_id'][:12]}"
    sha = (source.get("sha256") or "?")[:12]
    return f"{source['file']} (sha256 {sha})"


def _aliases(row: dict) -> Text:
    return Text(", ".join(row["aliases"]), style="bold cyan") if row["aliases"] else Text("-", style="dim")


def _minute(iso: str) -> str:
    """``2026-11-30T01:15:42+00:00`` -> ``2026-11-30 01:15``: alias moves are read to the minute."""
    return iso[:16].replace("T", " ")


def _periods(row: dict) -> str:
    lines = []
    for p in row["alias_periods"]:
        until = "now" if p["until"] is None else f"{_minute(p['until'])} ({p['ended_by']})"
        lines.append(f"{p['alias']}: {_minute(p['from'])} ({p['by']}) → {until}")
    return "\n".join(lines) or "-"


def _table(title: str, with_model: bool, with_periods: bool) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY, title_justify="left", expand=False)
    if with_model:
        table.add_column("model", style="bold")
    table.add_column("v", justify="right")
    table.add_column("aliases")
    table.add_column("form")
    table.add_column("test accuracy", justify="right")
    table.add_column("parity")
    table.add_column("source")
    table.add_column("registered")
    if with_periods:
        table.add_column("alias history (UTC)")
    return table


def _add(table: Table, model: str | None, row: dict, with_periods: bool) -> None:
    cells = [] if model is None else [model]
    cells += [
        str(row["version"]),
        _aliases(row),
        row.get("precision") or "?",
        _accuracy(row),
        _parity(row),
        _source(row["source"]),
        row["created"],
    ]
    table.add_row(*cells, *([_periods(row)] if with_periods else []))


def _layout(uri: str) -> str:
    """An MLflow Model names its model id; an older version its run's folder (``registry migrate``)."""
    if uri.startswith("models:/"):
        return f"MLflow Model {uri}"
    return f"run files {uri} (cifar10 registry migrate makes it an MLflow Model)"


def _record(console: Console, model: str, row: dict, with_periods: bool) -> None:
    """One version as ``field  value`` lines: nothing is cut, whatever the terminal's width."""
    head = Text(f"{model} v{row['version']}  ", style="bold")
    console.print(head + _aliases(row))
    fields = [
        ("form", row.get("precision") or "?"),
        ("accuracy", _accuracy(row)),
        ("parity", _parity(row)),
        ("source", _source(row["source"])),
        ("model", _layout(row.get("registered_from", ""))),
        ("registered", row["created"]),
    ]
    if with_periods:
        fields.append(("aliases", _periods(row).replace("\n", "\n" + " " * 14)))
    for name, value in fields:
        console.print(Text(f"  {name:<11} ") + (value if isinstance(value, Text) else Text(str(value))))


def _fits(console: Console, table: Table) -> bool:
    """Whether the table's natural width (no cell cut or wrapped) fits the terminal."""
    natural = Measurement.get(console, console.options.update(width=10_000, max_width=10_000), table)
    return natural.maximum <= console.width


def print_list(models: list[dict], console: Console | None = None) -> None:
    """Every version of every registered form, newest last within each model."""
    console = console or Console()
    if not models:
        console.print("no registered models yet: run `dvc repro` (its register stage) first")
        return
    table = _table("registered models", with_model=True, with_periods=False)
    for model in models:
        for row in model["versions"]:
            _add(table, model["name"], row, with_periods=False)
    if _fits(console, table):
        console.print(table)
        return
    for model in models:
        for row in model["versions"]:
            _record(console, model["name"], row, with_periods=False)


def print_show(model: dict, console: Console | None = None) -> None:
    """One registered model: its versions with their alias periods, and each alias's rollback stack."""
    console = console or Console()
    table = _table(model["name"], with_model=False, with_periods=True)
    for row in model["versions"]:
        _add(table, None, row, with_periods=True)
    if _fits(console, table):
        console.print(table)
    else:
        for row in model["versions"]:
            _record(console, model["name"], row, with_periods=True)
    for alias, stack in sorted(model["history"].items()):
        now = model["aliases"].get(alias)
        console.print(
            f"{alias}: now v{now if now is not None else ' unset'}; rollback goes to "
            + (f"v{stack[-2]}" if len(stack) >= 2 else "nothing (no earlier version)")
        )
