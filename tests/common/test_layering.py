"""Layering as a contract: import-linter holds, and in-Triton code imports only what the stub has."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB_HAS = {"numpy", "PIL", "onnxruntime", "triton_python_backend_utils"}


def test_import_linter_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_code_that_runs_inside_triton_imports_only_what_the_stub_has():
    """An allow-list, which import-linter's forbidden contracts can only approximate."""
    files = sorted((ROOT / "serving" / "triton").rglob("*.py"))
    assert len(files) >= 3
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            # A sibling file of the same folder is shipped beside it (preprocess imports image_decoding).
            siblings = {p.stem for p in path.parent.glob("*.py")}
            outside = {r for r in roots if r not in sys.stdlib_module_names | STUB_HAS | siblings}
            assert not outside, f"{path.relative_to(ROOT)} imports {outside}"
