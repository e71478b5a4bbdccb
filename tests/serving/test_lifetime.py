"""Nothing outlives its owner: a SIGKILLed tritonserver leaves no stub, a killed owner leaves no server.

Seen before the supervisor existed: after ``kill -9`` of tritonserver its python stubs lived on,
re-parented to init, holding their models in memory (71 minutes later, ignoring SIGTERM); and a
server started by an interrupted pytest run was still serving 49 minutes later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from serving.repository.build import build_repository
from serving.server import supervisor
from serving.server.embedded import EmbeddedServer, ServerConfig, free_ports
from tests.serving.conftest import make_spec, triton_or_skip

pytestmark = pytest.mark.triton
ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Running and not a zombie (a zombie holds no memory; its parent only has to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    out, stack = [], supervisor.children(pid)
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(supervisor.children(child))
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def is_stub(pid: int) -> bool:
    return supervisor.STUB in supervisor._exe(pid)


@pytest.fixture(scope="module")
def repository(onnx_models, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("lifetime") / "model_repository"
    build_repository(make_spec({1: onnx_models[1]}, production=1), repo)
    return repo


def config(repo: Path, log_dir: Path) -> ServerConfig:
    http, grpc, metrics = free_ports(3)
    return ServerConfig(
        repo, http_port=http, grpc_port=grpc, metrics_port=metrics,
        log_file=log_dir / "tritonserver.log", ort_threads=1, exit_timeout_s=2,
    )  # fmt: skip


def test_no_stub_survives_a_sigkilled_tritonserver(repository, tmp_path):
    triton_or_skip()
    with EmbeddedServer(config(repository, tmp_path)) as server:
        triton = server.triton_pid
        stubs = [p for p in descendants(triton) if is_stub(p)]
        assert len(stubs) >= 3, stubs  # classifier, preprocess, postprocess
        os.kill(triton, signal.SIGKILL)
        assert server.process.wait(timeout=30) == 128 + signal.SIGKILL
        assert wait_gone(stubs, timeout=10) == [], "python stubs outlived their server"
        assert not alive(triton)


def test_no_server_survives_its_killed_owner(repository, tmp_path):
    """The program that started the server dies by SIGKILL: Triton drains and stops, stubs go too."""
    triton_or_skip()
    owner = textwrap.dedent(
        """
        import json, sys, time
        from pathlib import Path
        from serving.server.embedded import EmbeddedServer, ServerConfig
        cfg = ServerConfig(**json.loads(sys.argv[1]))
        server = EmbeddedServer(cfg).start().wait_ready(120)
        print(json.dumps({"supervisor": server.process.pid, "triton": server.triton_pid}), flush=True)
        time.sleep(600)
        """
    )
    cfg = config(repository, tmp_path)
    args = {
        "model_repository": str(cfg.model_repository), "http_port": cfg.http_port,
        "grpc_port": cfg.grpc_port, "metrics_port": cfg.metrics_port, "log_file": str(cfg.log_file),
        "ort_threads": 1, "exit_timeout_s": 2,
    }  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", owner, json.dumps(args)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = json.loads(proc.stdout.readline())
        everything = [pids["supervisor"], pids["triton"], *descendants(pids["triton"])]
        assert sum(is_stub(p) for p in everything) >= 3
        proc.kill()
        proc.wait(timeout=10)
        assert wait_gone(everything, timeout=30) == [], "the server outlived the process that started it"
    finally:
        proc.kill()


def orphan_stand_in(folder: Path) -> int:
    """A process that looks like a stub orphaned by a dead server of ours: parented to init.

    It is ``sleep`` under the stub's name in a scratch-like folder; stubs that lose their server
    usually exit by themselves, but not always (the 71 minutes above), so the reaper is tested on
    a process that certainly stays.
    """
    fake = folder / "cifar10-triton-stale" / "backends" / "python" / supervisor.STUB
    fake.parent.mkdir(parents=True)
    fake.write_bytes(Path("/bin/sleep").read_bytes())
    fake.chmod(0o755)
    # double fork: the middle process exits at once, so the stand-in is re-parented away from us
    out = subprocess.run(
        ["sh", "-c", f"'{fake}' 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_stubs_orphaned_by_a_dead_server_are_reaped_at_the_next_start(repository, tmp_path):
    """What the supervisor cannot cover, its own SIGKILL, is cleaned up by the next start."""
    triton_or_skip()
    orphan = orphan_stand_in(tmp_path)
    assert alive(orphan) and supervisor._ppid(orphan) != os.getpid()
    with EmbeddedServer(config(repository, tmp_path / "a")) as first:
        assert wait_gone([orphan], timeout=10) == []
        stubs = [p for p in descendants(first.triton_pid) if is_stub(p)]
        with EmbeddedServer(config(repository, tmp_path / "b")):
            assert all(alive(p) for p in stubs)  # another live server's stubs are never touched


def test_a_sigkilled_supervisor_takes_tritonserver_with_it(repository, tmp_path):
    triton_or_skip()
    server = EmbeddedServer(config(repository, tmp_path)).start().wait_ready(120)
    triton = server.triton_pid
    server.process.kill()
    server.process.wait(timeout=10)
    try:
        assert wait_gone([triton], timeout=10) == [], "tritonserver outlived its supervisor"
    finally:
        server.stop(grace=1)
