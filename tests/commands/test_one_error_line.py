"""Every command, given bad input, exits with the table's code and prints one ``error:`` line.

The command tree is walked, so a command added later is covered by the unknown-option case at once;
each also gets a bad input of its own kind (a malformed params file, a missing folder or file).
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from commands.aliases import ALIASES, forward
from commands.main import GROUPS, cli, main

BAD_PARAMS_LINE = 'error: serving.max_queue_delay_us: expected int >= 0, got "2ms"'


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            found += _leaves(command, (*path, name))
        else:
            found.append((*path, name))
    return found


LEAVES = _leaves(cli)


@pytest.fixture
def bad_params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("serving:\n  max_queue_delay_us: 2ms\n")
    return path


def _run(capsys, argv: list[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return done.value.code, [line for line in err if not line.startswith("note: ")]


def test_the_tree_has_every_group():
    assert {path[0] for path in LEAVES} == set(GROUPS)
    assert len(LEAVES) >= 25


@pytest.mark.parametrize(
    "path", [p for p in LEAVES if p != ("tune", "apply")], ids=" ".join
)  # it forwards to dvc
def test_an_unknown_option_is_one_line_and_code_2(capsys, path):
    code, err = _run(capsys, [*path, "--no-such-option"])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: No such option"), err


def _with_params(path: tuple[str, ...], bad: Path) -> list[str]:
    """``--params`` goes on the group for registry, release and tune, as their groups take it."""
    if path[0] in ("registry", "release", "tune"):
        return [path[0], "--params", str(bad), *path[1:]]
    return [*path, "--params", str(bad)]


READS_PARAMS = [p for p in LEAVES if p[0] in ("data", "train", "evaluate", "export", "registry", "optimize",
                                               "release", "tune", "params")]  # fmt: skip
EXTRA_ARGS = {("registry", "promote"): ["--version", "1"], ("release", "start"): ["--version", "2"]}
NO_PARAMS = {
    ("registry", "import-run"),
    ("registry", "unpack"),
    ("registry", "serving-input"),
    ("tune", "apply"),
    ("params", "reference"),
}


@pytest.mark.parametrize("path", [p for p in READS_PARAMS if p not in NO_PARAMS], ids=" ".join)
def test_a_malformed_params_file_names_the_key(capsys, path, bad_params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written beside the repository if a command got further
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, err = _run(capsys, [*_with_params(path, bad_params), *EXTRA_ARGS.get(path, [])])
    assert (code, err) == (2, [BAD_PARAMS_LINE])


MISSING = "/nonexistent/cifar10-test"
MISSING_INPUT = {
    ("registry", "import-run"): [MISSING],
    ("registry", "unpack"): [MISSING, "--out", "x.safetensors"],
    ("serve",): ["--model-repository", MISSING],
    ("client", "batch"): ["--images", MISSING],
    ("client", "confusion"): ["--csv", f"{MISSING}.csv"],
    ("monitor", "drift"): ["--reference", f"{MISSING}.json"],
    ("monitor", "reference-rules"): ["--reference", f"{MISSING}.json", "--out", "rules.yml"],
    ("tune", "apply"): ["--best", f"{MISSING}.json", "--dry-run"],
}


@pytest.mark.parametrize("path", list(MISSING_INPUT), ids=" ".join)
def test_a_missing_input_is_one_line_and_code_2(capsys, path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, err = _run(capsys, [*path, *MISSING_INPUT[path]])
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "nonexistent" in err[0], err


def test_an_old_script_says_it_is_deprecated_and_still_works(capsys):
    assert set(ALIASES) >= {"cifar10-registry", "cifar10-client", "cifar10-release", "cifar10-serve"}
    with pytest.raises(SystemExit) as done:
        forward("cifar10-prepare", ["--help"])
    err = capsys.readouterr().err
    assert done.value.code == 0
    assert "note: cifar10-prepare is deprecated and goes in 0.3; use: cifar10 data prepare" in err
