"""CI fails, not skips, when something it declared it must have is missing (``CIFAR10_REQUIRE``)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The mirror tests in a child pytest whose ``../shared`` does not exist."""
    child_env = {k: v for k, v in os.environ.items() if k != "CIFAR10_REQUIRE"}
    child_env |= {"CIFAR10_SHARED": str(tmp_path / "no-shared"), **env}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/training/test_mirror.py"],
        cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_locally_a_missing_mirror_skips(tmp_path):
    done = run_pytest(tmp_path)
    assert done.returncode == 0 and "skipped" in done.stdout and "failed" not in done.stdout, done.stdout


def test_in_ci_a_missing_mirror_fails_the_run_with_one_line_naming_it(tmp_path):
    done = run_pytest(tmp_path, CIFAR10_REQUIRE="mirror,triton")
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage-error code: nothing ran
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "missing requirement" in ln]
    assert len(lines) == 1 and "missing requirement mirror: offline CIFAR-10 mirror not found" in lines[0]
    assert "missing requirement triton" not in lines[0]  # present here, so not named


def test_a_misspelt_requirement_is_an_error_not_a_pass(tmp_path):
    done = run_pytest(tmp_path, CIFAR10_REQUIRE="mirrror")
    assert done.returncode != 0 and "unknown requirement" in done.stdout + done.stderr
