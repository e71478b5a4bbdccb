"""The fleet's parts without Triton: which replicas a change reaches, and haproxy's runtime API for real."""

from __future__ import annotations

import pytest

from common.exit_codes import UNAVAILABLE
from common.params_errors import ParamsError
from common.params_schema import FleetConfig
from scripts.local_balancer import haproxy
from serving.fleet.haproxy import BalancerError, Haproxy, NoBalancer
from serving.fleet.replicas import SINGLE, Replica, discover, fleet_replicas, rollout_targets
from serving.server.embedded import free_ports
from tests.prerequisites import need

TWO = [{"name": "r1", "grpc": "10.0.0.1:8001", "http": "10.0.0.1:8000"},
       {"name": "r2", "grpc": "10.0.0.2:8001", "http": "10.0.0.2:8000"}]  # fmt: skip


def test_no_fleet_is_the_one_server_a_command_names():
    assert fleet_replicas(FleetConfig(), "grpc://127.0.0.1:8001") == [Replica(SINGLE, "127.0.0.1:8001")]
    assert rollout_targets(FleetConfig(), None, whole_fleet=False) == []  # nothing to roll: write only
    with pytest.raises(ValueError, match="names no fleet"):
        rollout_targets(FleetConfig(), None, whole_fleet=True)


def test_a_named_fleet_is_rolled_whole_or_not_at_all():
    fleet = FleetConfig(replicas=TWO)
    assert [r.name for r in rollout_targets(fleet, None, whole_fleet=True)] == ["r1", "r2"]
    with pytest.raises(ValueError, match="reaches all of it or none"):
        rollout_targets(fleet, "10.0.0.1:8001", whole_fleet=False)
    assert rollout_targets(fleet, None, whole_fleet=False) == []  # a plain sync publishes only


def test_fleet_settings_refuse_what_cannot_be_one_fleet():
    with pytest.raises(ParamsError, match="not both"):
        FleetConfig(replicas=TWO, service="triton:8001:8000")
    with pytest.raises(ParamsError, match="must differ"):
        FleetConfig(replicas=[TWO[0], TWO[0]])
    with pytest.raises(ParamsError):
        FleetConfig(replicas=[{"name": "r1"}])  # no endpoint


def test_a_service_name_is_read_at_run_time_one_replica_per_address():
    replicas = discover("localhost:8001:8000")
    assert replicas and all(r.grpc.endswith(":8001") and r.http.endswith(":8000") for r in replicas)
    assert "127.0.0.1" in {r.name for r in replicas}
    with pytest.raises(ValueError, match="host:grpc_port:http_port"):
        discover("localhost:8001")
    with pytest.raises(Exception) as unresolved:
        discover("no-such-host.invalid:8001:8000")
    assert getattr(unresolved.value, "exit_code", None) == UNAVAILABLE


@pytest.fixture(scope="module")
def balancer(tmp_path_factory):
    need("haproxy")
    ports = free_ports(4)  # two replicas that never start, each with its own gRPC and HTTP port
    dead = [(f"r{i}", f"127.0.0.1:{ports[2 * i - 2]}", f"127.0.0.1:{ports[2 * i - 1]}") for i in (1, 2)]
    with haproxy(dead, tmp_path_factory.mktemp("lb")) as lb:
        yield Haproxy(lb.admin, drain_timeout_s=1.0)


def test_haproxy_knows_each_replica_in_both_backends_and_refuses_a_stranger(balancer):
    assert balancer.backends("r1") == ["triton_grpc", "triton_http"]
    balancer.check(["r1", "r2"])
    with pytest.raises(BalancerError, match="no server named r9"):
        balancer.check(["r1", "r9"])


def drained(balancer: Haproxy, name: str) -> bool:
    """Whether ``name`` is in forced drain (haproxy's SRV_ADMF_FDRAIN, admin bit 0x8) in any backend."""
    lines = balancer.command("show servers state").splitlines()
    header = next(line for line in lines if line.startswith("# be_id")).lstrip("# ").split()
    rows = [dict(zip(header, line.split(), strict=False)) for line in lines[2:] if line.strip()]
    return any(int(r["srv_admin_state"]) & 0x08 for r in rows if r.get("srv_name") == name)


def test_drain_and_ready_go_through_the_runtime_api(balancer):
    balancer.set_state("r1", "drain")
    assert drained(balancer, "r1") and not drained(balancer, "r2")
    balancer.set_state("r1", "ready")
    assert not drained(balancer, "r1")
    assert balancer.sessions("r1") == 0


def test_a_replica_whose_peers_are_not_ready_is_changed_without_draining(balancer, monkeypatch):
    monkeypatch.setattr(balancer, "others_up", lambda name: True)  # haproxy's view: only peers decides
    with balancer.out("r1", peers=lambda: "none"):
        assert not drained(balancer, "r1")


def test_an_unreachable_runtime_api_is_one_clear_error(tmp_path):
    with pytest.raises(BalancerError, match="runtime API") as failed:
        Haproxy(str(tmp_path / "no.sock")).check(["r1"])
    assert failed.value.exit_code == UNAVAILABLE
    with NoBalancer().out("r1"):
        pass


def test_a_server_that_does_not_answer_is_an_error_not_a_model_without_a_generation():
    """Reading a loaded config from a server that is gone must fail, not read as "not loaded": a
    rollout would report the previous config still serving and undo the change on every replica."""
    from serving.rollout.admin import AdminError, ModelAdmin

    (port,) = free_ports(1)
    admin = ModelAdmin(f"127.0.0.1:{port}", None, 2.0)
    try:
        with pytest.raises(AdminError, match="reading 'cifar10'"):
            admin.generation("cifar10")
    finally:
        admin.close()
