"""The replicas a change must reach: ``fleet.replicas`` in params.yaml, a Kubernetes Service, or one server.

A change that reaches some replicas and not others makes the public answer depend on which replica a
request lands on, so every command that changes what serves resolves the whole fleet first, here,
and refuses to start when a replica cannot be managed (:func:`serving.rollout.apply.apply`).

A Kubernetes headless Service (``fleet.service``) is read at run time through DNS: the Service's
name resolves to one address per ready pod, so no Kubernetes client or API permission is needed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from common.exit_codes import Unavailable
from common.params_schema import FleetConfig

SINGLE = "server"  # the name of the one replica a command's --server names


@dataclass(frozen=True)
class Replica:
    """One Triton: ``name`` is its server name in the balancer; ``grpc`` (and ``http``) are host:port."""

    name: str
    grpc: str
    http: str = ""

    def __str__(self) -> str:
        return f"replica {self.name} ({self.grpc})"


def fleet_replicas(fleet: FleetConfig, server: str | None) -> list[Replica]:
    """The replicas ``fleet`` names, or the one ``server`` names when it names none (the default)."""
    if fleet.replicas:
        return [Replica(r.name, r.grpc, r.http) for r in fleet.replicas]
    if fleet.service:
        return discover(fleet.service)
    return [single(server)] if server else []


def single(server: str) -> Replica:
    """The one server ``--server`` names (``grpc://`` or not), as a replica of its own."""
    return Replica(SINGLE, server.split("://", 1)[-1])


def rollout_targets(fleet: FleetConfig, server: str | None, whole_fleet: bool) -> list[Replica]:
    """The servers a rollout changes: the fleet with ``whole_fleet``, else the one ``server`` names.

    Raises:
        ValueError: ``whole_fleet`` without a fleet in params.yaml, or one server named while a fleet
            is: changing one replica of several is what makes answers depend on the replica reached.
    """
    if whole_fleet and not fleet.named:
        raise ValueError("--fleet: params.yaml names no fleet (fleet.replicas or fleet.service)")
    if fleet.named and server and not whole_fleet:
        raise ValueError(
            f"--server {server}: params.yaml names a fleet; a change reaches all of it or none (--fleet)"
        )
    if whole_fleet:
        return fleet_replicas(fleet, None)
    return [single(server)] if server else []  # none: write the repository only


def discover(service: str) -> list[Replica]:
    """``host:grpc_port:http_port``: one replica per address the host resolves to (a headless Service).

    Raises:
        Unavailable: the name does not resolve (exit 3): a fleet with no replica cannot be changed.
    """
    host, grpc_port, http_port = _parse(service)
    try:
        infos = socket.getaddrinfo(host, int(grpc_port), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unavailable(f"fleet.service {service!r}: {host} does not resolve ({exc})") from exc
    addresses = sorted({info[4][0] for info in infos})
    return [Replica(a, f"{_host(a)}:{grpc_port}", f"{_host(a)}:{http_port}") for a in addresses]


def _parse(service: str) -> tuple[str, str, str]:
    host, _, ports = service.partition(":")
    grpc_port, _, http_port = ports.partition(":")
    if not (host and grpc_port.isdigit() and http_port.isdigit()):
        raise ValueError(f"fleet.service must be host:grpc_port:http_port, got {service!r}")
    return host, grpc_port, http_port


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address  # an IPv6 address in host:port
