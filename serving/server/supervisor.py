"""Keep ``tritonserver`` and every process it spawns inside one lifetime (stdlib only, Linux).

``python serving/server/supervisor.py --pid-file F --grace S -- tritonserver ARGS...``

Why it exists: Triton starts one python-backend stub process per model instance. When
``tritonserver`` dies by SIGKILL, its stubs are re-parented to init and live on, each holding its
model in memory (seen here: still running 71 minutes later, ignoring SIGTERM). And when the program
that started Triton dies, Triton itself lives on, serving from a repository nobody manages.

What it does:

* It becomes a *child subreaper* (``PR_SET_CHILD_SUBREAPER``), so processes orphaned below it are
  re-parented to it instead of to init, where it can still find and kill them.
* It starts ``tritonserver`` as its child with ``PR_SET_PDEATHSIG = SIGKILL``: if the supervisor is
  itself killed, Triton goes with it (the supervisor is single-threaded, so this is exact).
* Its stdin is a pipe whose write end only its parent holds. EOF on it means the parent process is
  gone, however it died; the supervisor then stops Triton as on SIGTERM.
* On SIGTERM/SIGINT it forwards SIGTERM to Triton, which drains in-flight requests, and waits up to
  ``--grace`` seconds before SIGKILL.
* Whenever Triton has exited, for whatever reason, every remaining descendant is SIGKILLed and
  reaped before the supervisor exits with Triton's exit code (128 + signal number if it was killed).

Triton's pid is written to ``--pid-file`` so tests (and operators) can address the server itself.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _die_with_parent() -> None:  # runs in the forked child, before exec
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, read from ``/proc`` (every thread's ``children`` list)."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.update(int(c) for c in fh.read().split())
        except OSError:
            continue
    return sorted(found)


def kill_descendants(root: int) -> int:
    """SIGKILL every process below ``root`` (depth first), reap ours; returns how many were signalled."""
    killed = 0
    for _ in range(50):  # a forking process could respawn; in practice one or two passes suffice
        stack, seen = children(root), []
        while stack:
            pid = stack.pop()
            seen.append(pid)
            stack.extend(children(pid))
        if not seen:
            return killed
        for pid in reversed(seen):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while children(root) and time.monotonic() < deadline:
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            time.sleep(0.01)
    return killed


STUB = "triton_python_backend_stub"


def _exe(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _ppid(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def reap_orphaned_stubs(marker: str) -> list[int]:
    """SIGKILL python stubs of an earlier server of ours whose ``tritonserver`` is gone.

    Only stubs whose binary lies in one of our scratch folders (``marker`` in its path) and whose
    parent is not a ``tritonserver`` are touched: they belong to a server that was killed along
    with its supervisor, and nothing will ever talk to them again. Returns the pids signalled.
    """
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        exe = _exe(entry)
        if marker not in exe or STUB not in os.path.basename(exe.removesuffix(" (deleted)")):
            continue
        if os.path.basename(_exe(_ppid(entry)).removesuffix(" (deleted)")) == "tritonserver":
            continue
        try:
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def exit_code(status: int) -> int:
    return status if status >= 0 else 128 - status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pid-file", default=None)
    p.add_argument("--grace", type=float, default=40.0, help="seconds Triton gets to drain on stop")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command to supervise")

    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    stop = {"signal": 0}

    def on_signal(signum, _frame) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    triton = subprocess.Popen(command, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)
    if args.pid_file:
        tmp = f"{args.pid_file}.tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{triton.pid}\n")
        os.replace(tmp, args.pid_file)

    watch_parent = not sys.stdin.isatty()
    stopping_since: float | None = None
    while triton.poll() is None:
        if not stop["signal"] and watch_parent:
            try:
                ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            except InterruptedError:
                ready = []
            if ready and not os.read(sys.stdin.fileno(), 1):
                stop["signal"] = signal.SIGTERM  # EOF: the process that started us is gone
                watch_parent = False
        else:
            time.sleep(0.1)
        if stop["signal"] and stopping_since is None:
            stopping_since = time.monotonic()
            triton.send_signal(signal.SIGTERM)
        if stopping_since is not None and time.monotonic() - stopping_since > args.grace:
            triton.kill()
    kill_descendants(os.getpid())
    return exit_code(triton.returncode)


if __name__ == "__main__":
    sys.exit(main())
