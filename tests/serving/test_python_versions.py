"""Python 3.11-3.13: the embedded server picks the stub and libpython of the interpreter that runs it.

CI runs on 3.11 (torch for other Pythons is a multi-GB download). The serving path and the client
are torch-free, so one test installs them into a Python 3.12 virtual environment, starts the embedded
``tritonserver`` from it and classifies images through the ensemble: the python models then run in
the 3.12 stub, on that venv's numpy and Pillow. It skips, saying why, where no 3.12 is present.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from serving.repository.build import build_repository
from serving.server import environment
from serving.server.embedded import free_ports
from tests.conftest import ROOT, make_image_folder
from tests.serving.conftest import make_spec, triton_or_skip

PYTHON_ENV = "CIFAR10_PYTHON312"
# Base packages the serving path and the client never import; MLflow alone is ~100 MB of wheels.
NOT_ON_THE_SERVING_PATH = {"mlflow", "matplotlib", "scikit-learn"}


def test_a_python_without_a_stub_is_named_with_the_supported_ones():
    triton_or_skip()
    with pytest.raises(environment.TritonNotFoundError) as err:
        environment.prepare_backend_dir(Path("/nonexistent"), python_version="3.99")
    message = str(err.value)
    assert "\n" not in message and "Python 3.99" in message
    assert all(v in message for v in ("3.11", "3.12", "3.13"))


def test_a_missing_libpython_is_found_before_start_and_named():
    """The 3.12 stub under a loader path without any 3.12 ``libpython``: the loader says it is missing."""
    triton_or_skip()
    binary = environment.find_tritonserver()
    bare = {"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": str(environment._libs_dir(binary))}
    system_has_it = (
        "libpython3.12.so.1.0"
        in subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    )
    missing = environment.missing_libraries(environment._stub("3.12"), bare)
    assert missing == ([] if system_has_it else ["libpython3.12.so.1.0"])
    # 3.13's stub carries its own libpython inside the wheel: nothing to install for it.
    assert environment.missing_libraries(environment._stub("3.13"), bare) == []
    # The running interpreter's own stub resolves in the environment the server is given.
    env = environment.server_env(binary)
    assert environment.missing_libraries(environment._stub(), env) == []


def python312() -> str | None:
    """A working ``python3.12``: ``$CIFAR10_PYTHON312``, then PATH, then pyenv's versions."""
    candidates = [os.environ.get(PYTHON_ENV), shutil.which("python3.12")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.12*/bin/python3.12"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def serving_requirements() -> list[str]:
    """The ``serve`` and ``client`` extras plus the base packages they import, as pyproject pins them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [
        r for r in project["dependencies"] if r.split("<")[0].split(">")[0] not in NOT_ON_THE_SERVING_PATH
    ]
    extras = project["optional-dependencies"]
    return base + extras["serve"] + extras["client"]


def project_copy(dest: Path) -> Path:
    """The project's source as a clean folder, so building its wheel leaves nothing in the checkout."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for name in [*packages, "pyproject.toml", "README.md"]:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def stub_libpythons(repository: Path) -> set[str]:
    """The ``libpython`` files mapped into the python stubs serving ``repository``'s models."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            if "triton_python_backend_stub" not in cmdline or str(repository) not in cmdline:
                continue
            maps = (proc / "maps").read_text()
        except OSError:
            continue
        found |= {line.split()[-1] for line in maps.splitlines() if "libpython" in line}
    return found


@pytest.mark.slow
@pytest.mark.full  # 45 s of pip installs into a fresh venv: `make test-full`, not the 20-minute default run
@pytest.mark.triton
def test_serves_from_a_python312_venv(onnx_models, tmp_path):
    triton_or_skip()
    python = python312()
    if python is None:
        pytest.skip(f"no Python 3.12 here (looked at ${PYTHON_ENV}, PATH and pyenv); CI runs 3.11 only")
    venv = tmp_path / "py312"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *serving_requirements()], check=True)
    subprocess.run([*pip, "--no-deps", str(project_copy(tmp_path / "src"))], check=True)
    assert not (venv / "lib/python3.12/site-packages/torch").exists()

    repo = tmp_path / "repo"
    build_repository(make_spec(onnx_models, production=2), repo)
    images = make_image_folder(tmp_path / "images", {"test": 2})
    http, grpc, metrics = free_ports(3)
    serve = [str(venv / "bin/cifar10"), "serve", "--model-repository", str(repo), "--ort-threads=1"]
    ports = [f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}"]
    log = ["--log-file", str(tmp_path / "tritonserver.log"), "--startup-timeout", "180"]
    server = subprocess.Popen(
        [*serve, *ports, *log],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    try:
        first = server.stdout.readline()
        assert first.startswith("tritonserver ready"), first + server.stdout.read(4000)
        loaded = stub_libpythons(repo)
        assert loaded and all("libpython3.12" in path for path in loaded), loaded

        out = tmp_path / "out"
        urls = ["--url", f"127.0.0.1:{http}", "--grpc-url", f"127.0.0.1:{grpc}"]
        urls += ["--metrics-url", f"http://127.0.0.1:{metrics}/metrics"]
        args = ["--images", str(images / "test"), "--no-progress", "--out", str(out)]
        client = subprocess.run(
            [str(venv / "bin/cifar10"), "client", "batch", *urls, *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert client.returncode == 0, client.stdout + client.stderr
        with open(out / "predictions.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 20 and all(r["status"] == "ok" for r in rows)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait()
        print(f"python {python}; server exited {code} after SIGTERM", file=sys.stderr)
    assert code == 0
