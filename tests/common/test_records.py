"""What crosses a package boundary is typed: no public function handed to another room returns a bare
``dict`` or ``tuple`` (a typed record, a TypedDict or a ``dict[str, float]``-style mapping instead)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("commands", "common", "training", "export", "registry", "serving", "client", "monitoring",
            "optimize", "release", "tuning")  # fmt: skip
CALLERS = (*PACKAGES, "scripts", "benchmarks")


def _bare(annotation: ast.expr) -> bool:
    """``dict``, ``dict[..., Any]`` or a fixed ``tuple[A, B]`` (``| None`` too): a shape only its writer
    knows. A ``tuple[str, ...]`` is a typed sequence, and a ``dict[str, float]`` a typed mapping."""
    text = ast.unparse(annotation).removesuffix(" | None")
    head = text.split("[", 1)[0].rsplit(".", 1)[-1]
    if head in ("tuple", "Tuple"):
        return not text.endswith(", ...]")
    return head in ("dict", "Dict") and ("[" not in text or "Any" in text)


def _public_functions() -> dict[tuple[str, str], ast.FunctionDef | ast.AsyncFunctionDef]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                    found[(module, node.name)] = node
    return found


def _used_across(caller: str, tree: ast.Module) -> set[tuple[str, str]]:
    """``(module, name)`` of functions another package's module uses: imported, or called on a module."""
    used, modules = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in (caller, "tests") or node.module.split(".")[0] not in PACKAGES:
                continue  # inside one package, a helper may return what its room knows
            for alias in node.names:
                used.add((node.module, alias.name))
                modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            used.add((modules[node.value.id], node.attr))
    return used


def test_no_bare_dict_or_tuple_crosses_a_package_boundary():
    functions, offenders = _public_functions(), set()
    for caller in CALLERS:
        for path in (ROOT / caller).rglob("*.py"):
            for key in _used_across(caller, ast.parse(path.read_text())):
                fn = functions.get(key)
                if fn is not None and fn.returns is not None and _bare(fn.returns):
                    offenders.add(f"{key[0]}.{key[1]} -> {ast.unparse(fn.returns)}")
    assert not sorted(offenders)


def test_the_rule_sees_a_bare_return():
    assert _bare(ast.parse("dict", mode="eval").body) and _bare(
        ast.parse("tuple[str, bool]", mode="eval").body
    )
    assert _bare(ast.parse("dict[str, Any]", mode="eval").body)
    assert not _bare(ast.parse("dict[str, float]", mode="eval").body)
    assert not _bare(ast.parse("tuple[str, ...]", mode="eval").body)
    assert _bare(ast.parse("tuple[float, int] | None", mode="eval").body)
    assert not _bare(ast.parse("SyncResult", mode="eval").body)
