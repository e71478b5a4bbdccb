"""haproxy (Debian) in front of Triton replicas on this machine, for the fleet tests and benchmark.

One gRPC listener (HTTP/2 to the replicas) and one HTTP listener, each replica a server of the same
name in both backends, health-checked on the public model's readiness (``/v2/models/cifar10/ready``:
whether the replica can answer it; the server's strict ``/v2/health/ready`` also fails while any model
reloads, which would take a lone replica out mid-change), and the runtime API on a unix socket
at admin level (what :mod:`serving.fleet.haproxy` drains through). The retry settings are the ones a
fleet needs: a request that reached a replica which then reset or died is sent again to another
(``retry-on`` + ``option redispatch``; haproxy retries only requests it holds whole, hence
``http-buffer-request``). ``docs/fleet.md`` shows the same file for a real deployment.

    with haproxy([("r1", "127.0.0.1:8001", "127.0.0.1:8000"), ...], folder) as lb:
        lb.grpc, lb.http, lb.admin  # host:port, host:port, socket path
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.local_stores import stop_process, wait_port
from serving.server.embedded import free_ports

CONFIG = """\
global
    stats socket {admin} mode 600 level admin
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout queue 30s
    retries 3
    option redispatch 1
    option http-buffer-request
    retry-on conn-failure empty-response response-timeout 502 503

frontend grpc_in
    bind 127.0.0.1:{grpc} proto h2
    default_backend triton_grpc

frontend http_in
    bind 127.0.0.1:{http}
    default_backend triton_http

backend triton_grpc
    balance roundrobin
    option httpchk
    http-check send meth GET uri /v2/models/cifar10/ready
{grpc_servers}

backend triton_http
    balance roundrobin
    option httpchk
    http-check send meth GET uri /v2/models/cifar10/ready
{http_servers}
"""
CHECK = "check inter 250ms fall 2 rise 2"


def config_text(replicas: list[tuple[str, str, str]], grpc: int, http: int, admin: Path) -> str:
    """haproxy.cfg for ``(name, grpc host:port, http host:port)`` replicas."""
    grpc_servers = "\n".join(
        f"    server {n} {g} proto h2 {CHECK} addr {h.rpartition(':')[0]} port {h.rpartition(':')[2]}"
        f" check-proto h1"
        for n, g, h in replicas
    )
    http_servers = "\n".join(f"    server {n} {h} {CHECK}" for n, _, h in replicas)
    return CONFIG.format(
        admin=admin, grpc=grpc, http=http, grpc_servers=grpc_servers, http_servers=http_servers
    )


@dataclass(frozen=True)
class Balancer:
    grpc: str
    http: str
    admin: str  # the runtime API's unix socket
    process: subprocess.Popen


@contextlib.contextmanager
def haproxy(replicas: list[tuple[str, str, str]], folder: Path) -> Iterator[Balancer]:
    """haproxy balancing ``replicas``, stopped (and waited for) on exit."""
    binary = shutil.which("haproxy")
    if binary is None:
        raise FileNotFoundError("haproxy not found (Debian: apt-get install haproxy)")
    folder.mkdir(parents=True, exist_ok=True)
    (grpc, http), admin = free_ports(2), folder / "admin.sock"
    cfg = folder / "haproxy.cfg"
    cfg.write_text(config_text(replicas, grpc, http, admin))
    subprocess.run([binary, "-c", "-q", "-f", str(cfg)], check=True, capture_output=True)
    log = (folder / "haproxy.log").open("w")
    process = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(grpc, process, 10, "haproxy")
        wait_port(http, process, 10, "haproxy")
        yield Balancer(f"127.0.0.1:{grpc}", f"127.0.0.1:{http}", str(admin), process)
    finally:
        stop_process(process)
        log.close()
