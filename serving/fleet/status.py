"""What each replica of a fleet serves, against what the repository says: ``cifar10 release status``.

A replica that matches the repository serves exactly the spec every replica converges to; one that
does not is mid-change, restarting, or was missed (a rerun of the change brings it back in step).
"""

from __future__ import annotations

from serving.fleet.replicas import Replica
from serving.repository.build import model_generations
from serving.repository.spec import RepositorySpec
from serving.rollout.admin import AdminError, ModelAdmin
from serving.rollout.converge import ready, stale

TIMEOUT_S = 5.0


def replica_states(
    replicas: list[Replica], header: tuple[str, str] | None, spec: RepositorySpec | None
) -> list[dict]:
    """One row per replica: reachable, READY versions per model, and whether it serves ``spec``."""
    rows, generations = [], model_generations(spec) if spec is not None else {}
    for replica in replicas:
        admin = ModelAdmin(replica.grpc, header, TIMEOUT_S)
        row: dict = {"name": replica.name, "grpc": replica.grpc}
        try:
            states = admin.states()
            models = sorted({name for name, _ in states})
            row["ready"] = {name: sorted(ready(states, name)) for name in models if ready(states, name)}
            if spec is not None:
                row["in_step"] = not stale(admin, spec, generations)
        except AdminError as exc:
            row["unreachable"] = str(exc)
        finally:
            admin.close()
        rows.append(row)
    return rows
