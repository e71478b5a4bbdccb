"""``dvc repro`` reruns every stage a code change can affect: each stage depends on what it imports.

The imported project modules are derived from the stage's command, following imports transitively:
``cifar10 <group> ...`` runs ``commands.main`` (its top-level imports) and the group's module named
in ``commands.main.GROUPS`` (all its imports); ``python -m module`` runs that module. One group
module per stage keeps the prepare stage independent of the model. A dependency may be a file or a
folder above it.
"""

from __future__ import annotations

import ast
import json
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("commands", "common", "training", "export", "registry", "serving", "client", "monitoring",
            "optimize", "release", "tuning")  # fmt: skip
PIPELINES = (ROOT / "dvc.yaml", ROOT / "tuning" / "dvc.yaml")


def _file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(_file(module).read_text())
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES and _file(n)}
    return found


def _entry(cmd: str) -> tuple[str, str | None]:
    """The module a stage runs (its top-level imports only, if it dispatches) and the one it runs."""
    from commands.main import GROUPS

    words = shlex.split(cmd)
    if "-m" in words:
        return words[words.index("-m") + 1], None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module = scripts[words[0]].split(":")[0]
    if module == "commands.main":
        return module, GROUPS[words[1]].split(":")[0]
    return module, None


def imported_files(cmd: str) -> set[str]:
    dispatcher, module = _entry(cmd)
    todo, seen = [dispatcher] + ([module] if module else []), set()
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += _imports(current, top_level_only=current == dispatcher and module is not None)
    return {str(_file(m).relative_to(ROOT)) for m in seen}


def _stages():
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            yield pytest.param(stage, id=f"{pipeline.relative_to(ROOT)}:{name}")


@pytest.mark.parametrize("stage", _stages())
def test_each_stage_depends_on_every_module_its_command_imports(stage):
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
    covered = [f for f in imported_files(stage["cmd"]) if any(f == d or f.startswith(f"{d}/") for d in deps)]
    missing = sorted(imported_files(stage["cmd"]) - set(covered))
    assert not missing, f"dvc.yaml misses: {missing}"


def _run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_a_change_in_training_code_reruns_train_evaluate_and_export(tmp_path):
    """In a scratch copy whose pipeline is committed as is, one line in the model's module.

    Every output is a placeholder and ``dvc commit`` records the state without running anything,
    so only the dependency graph decides what ``dvc status`` lists.
    """
    dvc = shutil.which("dvc")
    assert dvc, "dvc is part of the train extra (make install)"
    dvc = str(Path(dvc).resolve())
    work = tmp_path / "copy"
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", *PACKAGES):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__", "dvc.yaml"))
        else:
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, work / name)
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for item in [*stage.get("deps", []), *stage.get("outs", []), *stage.get("metrics", [])]:
            path = work / (item if isinstance(item, str) else next(iter(item)))
            if not path.exists():
                path.mkdir(parents=True) if not path.suffix else path.parent.mkdir(
                    parents=True, exist_ok=True
                )
                (path / "placeholder" if path.is_dir() else path).write_text("{}")
    _run([dvc, "init", "--no-scm", "-q"], work)
    _run([dvc, "commit", "-f", "-q"], work)
    assert json.loads(_run([dvc, "status", "--json"], work)) == {}
    model = work / "training" / "model.py"
    model.write_text(model.read_text() + "\n# one line\n")
    changed = set(json.loads(_run([dvc, "status", "--json"], work)))
    assert {"train", "evaluate", "export"} <= changed
    assert not changed & {"prepare", "reference_rules"}  # they import nothing of the model
