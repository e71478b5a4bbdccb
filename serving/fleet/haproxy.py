"""Take a replica out of haproxy before a change reloads a model on it, and put it back once it is ready.

Triton no longer promises that an explicit-mode reload keeps a model available (its documentation
since server PR #8562; issues #5757, #2076), so a fleet change never relies on it: the replica is set
to ``drain`` through haproxy's runtime API (no new request goes to it, those in flight finish), the
change waits until haproxy counts no session on it, loads, and sets it ``ready`` again.

The runtime API is haproxy's ``stats socket ... level admin``, a unix socket or a TCP address. A
replica is a server of the same name in every backend (gRPC, HTTP) that lists it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import socket
import time
from collections.abc import Callable, Iterator

from common.exit_codes import Unavailable

log = logging.getLogger(__name__)
UP_WAIT_S = 30.0  # beyond drain_timeout_s: a replica's health checks must pass again (haproxy's rise)


class BalancerError(Unavailable):
    """haproxy's runtime API is unreachable or refused a command (exit 3)."""


class Haproxy:
    """haproxy's runtime API at ``address``: a unix socket path, or ``host:port``."""

    def __init__(self, address: str, drain_timeout_s: float = 30.0, timeout_s: float = 5.0) -> None:
        self.address, self.drain_timeout_s, self.timeout_s = address, drain_timeout_s, timeout_s

    def command(self, line: str) -> str:
        family = socket.AF_UNIX if "/" in self.address else socket.AF_INET
        target = self.address if family == socket.AF_UNIX else _split(self.address)
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(target)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise BalancerError(f"haproxy runtime API at {self.address}: {exc}") from exc
        return b"".join(chunks).decode()

    def backends(self, name: str, stats: list[dict[str, str]] | None = None) -> list[str]:
        """The backends that list a server called ``name`` (in ``stats`` when already read)."""
        return sorted({row["# pxname"] for row in stats or self.stats() if row["svname"] == name})

    def check(self, names: list[str]) -> None:
        """Every replica is a server of the balancer (refused before a change moves anything)."""
        listed = {row["svname"] for row in self.stats()}
        missing = [n for n in names if n not in listed]
        if missing:
            raise BalancerError(f"haproxy at {self.address} has no server named {', '.join(missing)}")

    def sessions(self, name: str) -> int:
        """Requests haproxy has in flight to, or queued for, the server ``name`` (all backends)."""
        rows = [r for r in self.stats() if r["svname"] == name]
        return sum(int(r["scur"] or 0) + int(r["qcur"] or 0) for r in rows)

    def set_state(self, name: str, state: str) -> None:
        for backend in self.backends(name):
            answer = self.command(f"set server {backend}/{name} state {state}").strip()
            if answer:
                raise BalancerError(f"haproxy refused 'set server {backend}/{name} state {state}': {answer}")

    def up(self, name: str) -> bool:
        """Whether haproxy sends ``name`` traffic in every backend (health-checked UP, not drained)."""
        rows = [r for r in self.stats() if r["svname"] == name]
        return bool(rows) and all(r["status"] == "UP" for r in rows)

    def others_up(self, name: str) -> bool:
        """Whether every backend of ``name`` has another server that is UP."""
        rows = self.stats()
        return all(
            any(r["# pxname"] == backend and r["svname"] != name and r["status"] == "UP" for r in rows)
            for backend in self.backends(name, rows)
        )

    @contextlib.contextmanager
    def out(self, name: str, peers: Callable[[], str] = lambda: "ready") -> Iterator[None]:
        """``name`` drained and idle for the block, then back and health-checked UP before the next.

        Triton answers ``/v2/health/ready`` with an error while it loads, so haproxy's checks mark a
        replica DOWN during its change: putting it back is not enough, the next replica may be drained
        only once this one is UP again. A replica whose peers are not UP is not drained (that would
        leave the backend empty): its change relies on Triton's own reload, with a warning. haproxy's
        view lags a crash by its health checks, so ``peers`` asks the peers themselves too: "ready"
        (one is), "starting" (one answers, none is ready yet: wait for it) or "none".
        """
        deadline = time.monotonic() + UP_WAIT_S
        while True:
            said = peers()
            ok = said == "ready" and self.others_up(name)
            if ok or said == "none" or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # a peer just changed may still be coming back UP
        if not ok:
            log.warning("%s: no other replica is UP in the balancer; changing it without draining", name)
            yield
            return
        self.set_state(name, "drain")
        failed = False
        try:
            deadline = time.monotonic() + self.drain_timeout_s
            while (busy := self.sessions(name)) and time.monotonic() < deadline:
                time.sleep(0.05)
            if busy:
                log.warning("%s: %d requests still in flight after %.0f s", name, busy, self.drain_timeout_s)
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self.set_state(name, "ready")
            self._wait_up(name, raising=not failed)

    def _wait_up(self, name: str, raising: bool) -> None:
        deadline = time.monotonic() + self.drain_timeout_s + UP_WAIT_S
        while not self.up(name):
            if time.monotonic() > deadline:
                if raising:
                    raise BalancerError(f"{name} did not come back UP in haproxy at {self.address}")
                return
            time.sleep(0.1)

    def stats(self) -> list[dict[str, str]]:
        """``show stat``: a row per frontend, backend and server (``# pxname``, ``svname``, ``status``)."""
        return list(csv.DictReader(io.StringIO(self.command("show stat").strip())))


class NoBalancer:
    """No balancer to drain through (one server, or a Kubernetes Service): changes go straight on."""

    def check(self, names: list[str]) -> None:
        del names

    def out(self, name: str, peers: Callable[[], str] = str) -> contextlib.AbstractContextManager[None]:
        del name, peers
        return contextlib.nullcontext()


def balancer(admin: str, drain_timeout_s: float) -> Haproxy | NoBalancer:
    """``fleet.balancer_admin``: haproxy's runtime API, or ``""`` for none."""
    return Haproxy(admin, drain_timeout_s) if admin else NoBalancer()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
