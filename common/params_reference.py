"""The configuration reference and the exit-code table, written from the code that enforces them.

``docs/configuration.md`` lists every key of ``params.yaml`` with the type and range the schema
checks, the value the project's file gives it and the comment beside it there; ``docs/exit-codes.md``
is :data:`common.exit_codes.TABLE`. Both are generated (``cifar10 params reference``), and a test
fails when a committed page differs from what the code says, so the docs cannot drift.
"""

from __future__ import annotations

import json
import re
import typing
from typing import Any

from pydantic import BaseModel

from common import exit_codes, params_schema
from common.params_defaults import DEFAULTS_FILE, default_document
from common.params_errors import expected_text

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("data", params_schema.DataConfig, "data"),
    ("model", params_schema.ModelConfig, "profiles.<profile>.model"),
    ("train", params_schema.TrainConfig, "profiles.<profile>.train"),
    ("evaluate", params_schema.EvaluateConfig, "evaluate"),
    ("mlflow", params_schema.MlflowConfig, "mlflow"),
    ("export", params_schema.ExportConfig, "export"),
    ("registry", params_schema.RegistryConfig, "registry"),
    ("serving", params_schema.ServingConfig, "serving"),
    ("serving.gpu", params_schema.GpuServingConfig, "serving.gpu"),
    ("optimize", params_schema.OptimizeConfig, "optimize"),
    ("release", params_schema.ReleaseConfig, "release"),
    ("monitoring", params_schema.MonitoringConfig, "monitoring"),
    ("tune", params_schema.TuneConfig, "tune"),
    ("tune budget", params_schema.TuneBudget, "tune.profiles.<profile>"),
    ("stores", params_schema.StoresConfig, "stores"),
    ("fleet", params_schema.FleetConfig, "fleet"),
]


def _comments() -> dict[str, str]:
    """``dotted.path -> comment`` from params.yaml's inline comments, placed by indentation."""
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in DEFAULTS_FILE.read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z_][\w.]*):([^#]*)(?:#\s*(.+))?$", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if match.group(4):
            found.setdefault(".".join(k for _, k in stack), match.group(4).strip())
    return found


def _kind(field: Any) -> str:
    text = expected_text(field)
    if text:
        return text
    origin = typing.get_origin(field.annotation)
    if origin is tuple:
        return "list"
    if origin is dict:
        return "mapping"
    return "see params.yaml"


def _value(document: dict[str, Any], path: str, key: str) -> str:
    node: Any = document
    for part in path.split("."):
        part = next(iter(node)) if part == "<profile>" and isinstance(node, dict) else part
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if not isinstance(node, dict) or key not in node:
        return "(none)"
    value = node[key]
    return json.dumps(value) if not isinstance(value, dict) else "(a mapping)"


def configuration_markdown() -> str:
    document, comments = default_document(), _comments()
    out = [
        "# Configuration reference",
        "",
        "Generated from the schema (`common/params_schema.py`) and `params.yaml` by",
        "`cifar10 params reference`; a test keeps this page identical to what the code says.",
        "Every value is the project's `params.yaml`'s; a profile leaves out what it takes from the",
        "first profile there. Override with `--set key=value`, `CIFAR10_<SECTION>__<KEY>` or",
        "`dvc exp run -S`; `cifar10 params show` prints the resolved values and their origins.",
    ]
    for title, model, path in SECTIONS:
        out += ["", f"## {title}", "", f"In `params.yaml` at `{path}`.", ""]
        for key, field in model.model_fields.items():
            kind = _kind(field)
            first = next(iter(document.get("profiles", {})), "")
            note = comments.get(f"{path}.{key}".replace("<profile>", first), "")
            line = f"- `{key}`: {kind}; `{_value(document, path, key)}`"
            out.append(line + (f". {note}" if note else ""))
    return "\n".join(out) + "\n"


def exit_codes_markdown() -> str:
    out = [
        "# Exit codes",
        "",
        "Every `cifar10` command exits with one of these and prints one `error: ...` line, never a",
        "traceback. Generated from `common/exit_codes.py` (`cifar10 params reference`).",
        "",
        "| code | meaning |",
        "| --- | --- |",
    ]
    out += [f"| {code} | {meaning} |" for code, meaning in exit_codes.TABLE.items()]
    out += ["", "The class each code's errors extend:", ""]
    out += [f"- {code}: `{cls.__name__}`" for code, cls in exit_codes.CLASSES.items()]
    return "\n".join(out) + "\n"


PAGES = {"configuration.md": configuration_markdown, "exit-codes.md": exit_codes_markdown}
