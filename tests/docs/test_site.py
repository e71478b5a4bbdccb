"""The documentation site builds with no broken link, and what it generates matches the code."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from commands.main import GROUPS
from common.params_reference import PAGES

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_builds_strict(tmp_path):
    """A broken link, a missing page or a page left out of the nav fails the build (strict: true)."""
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_generated_pages_are_what_the_code_says():
    for name, page in PAGES.items():
        assert (ROOT / "docs" / name).read_text() == page(), f"docs/{name} is stale: cifar10 params reference"


def test_nothing_outside_tests_and_ci_cites_the_shared_folder():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    citing = []
    for name in tracked.split():
        path = ROOT / name
        if name.startswith(("tests/", ".ci/")) or not path.is_file() or path.suffix in (".png", ".lock"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        if "../shared" in text:
            citing.append(name)
    assert not citing


def test_the_readme_is_one_screen_and_names_real_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    named = set(re.findall(r"(?:^|`)cifar10 ([a-z]+)", readme, re.M))
    assert named and named <= set(GROUPS), named - set(GROUPS)
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / link).is_file(), link
