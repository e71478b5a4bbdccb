"""The demo's last screen: what serves and how well, where to look, and what to run next.

A newcomer who has just watched a pipeline scroll by needs the handful of facts that matter
afterwards, in one place: the accuracy actually served (the client's offline evaluation through
Triton, not a training-time figure), the endpoints, the MLflow UI command, the files worth opening,
and the commands most people want next.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

REPORTS = (
    ("reports/metrics.json", "training run: PyTorch test accuracy"),
    ("reports/export.json", "export: parity of each form against PyTorch"),
    ("reports/offline_eval/metrics.json", "served accuracy, per class, latency"),
    ("reports/offline_eval/confusion_matrix.png", "served confusion matrix"),
    ("reports/offline_eval/predictions.csv", "one row per image, as served"),
    ("artifacts/triton/tritonserver.log", "Triton's log"),
)


def served_accuracy(metrics_file: Path) -> str:
    if not metrics_file.is_file():
        return "no offline evaluation on record"
    m = json.loads(metrics_file.read_text())
    return (
        f"{100 * m['accuracy']:.2f} % on {m['tested_samples']:,} test images "
        f"({m['registered_model']} v{m['model_version']} through Triton's {m['triton_model']}, "
        f"{m['failed_samples']} failed)"
    )


def render(
    adoptions: list,
    endpoints: dict[str, str],
    tracking_uri: str,
    still_serving: bool,
    root: Path = Path("."),
) -> Group:
    """The map as a rich renderable (printed by the demo; tests read its text)."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("served accuracy", served_accuracy(root / "reports/offline_eval/metrics.json"))
    for a in adoptions:
        facts.add_row("production", Text(a.line()))
    state = "up (Ctrl-C stops it)" if still_serving else "stopped; `make serve` starts it again"
    facts.add_row("tritonserver", state)
    for name, url in endpoints.items():
        facts.add_row(f"  {name}", url)
    ui = "mlflow ui --port 5000 " + (f"--backend-store-uri {tracking_uri}" if tracking_uri else "")
    facts.add_row("MLflow UI", f"{ui.strip()}   then open http://127.0.0.1:5000")

    files = Table.grid(padding=(0, 2))
    files.add_column(no_wrap=True)
    files.add_column()
    for path, what in REPORTS:
        if (root / path).exists():
            files.add_row(path, Text(what, style="dim"))

    production = next((a.production for a in adoptions if a.production is not None), None)
    nxt = Table.grid(padding=(0, 2))
    nxt.add_row("first", Text("source .venv/bin/activate   # the cifar10 command on PATH", style="dim"))
    nxt.add_row("classify images", "make serve   # and in a second shell:")
    nxt.add_row("", "cifar10 client batch --images data/prepared/test_images --limit 200")
    nxt.add_row("see every version", "cifar10 registry list   # or: show --precision fp32")
    release = "cifar10 release --server 127.0.0.1:8001 --admin-token-file .triton-token start --version N"
    nxt.add_row("release a version", release)
    now = f"production is v{production}; " if production is not None else ""
    nxt.add_row("", Text(f"{now}gate, shadow, canary, then production or an automatic rollback", style="dim"))
    return Group(
        Panel(facts, title="cifar10 demo: what now serves", title_align="left"),
        Panel(files, title="files to open", title_align="left"),
        Panel(nxt, title="next", title_align="left"),
    )


def print_map(*args, console: Console | None = None, **kwargs) -> None:
    (console or Console()).print(render(*args, **kwargs))
