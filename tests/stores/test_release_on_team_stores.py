"""A release whose registry is a team's MLflow on PostgreSQL, with PostgreSQL restarted mid-release.

The release's record, heartbeat and runs live in the registry; the database behind it restarts while
the controller judges the shadow step. The controller either rides it out (MLflow's client retries
what the server failed) or, if it dies, a second ``start`` resumes from the record: either way the
release ends promoted, and no client request fails.
"""

from __future__ import annotations

import time
import uuid

import pytest

from registry import aliases
from tests.monitoring.conftest import prometheus_bin  # noqa: F401 - fixture re-export
from tests.release.test_release_live import ReleaseStack
from tests.serving.conftest import triton_or_skip
from tests.stores.test_team_mlflow import cifar10, small_params

pytestmark = [pytest.mark.triton, pytest.mark.slow]
DOWN_S = 5.0  # longer than several of the controller's checks (1 s) and heartbeats


@pytest.fixture(scope="module")
def team_stack(team_mlflow, small_weights, small_prepared, prometheus_bin, tmp_path_factory):  # noqa: F811
    triton_or_skip()
    tmp = tmp_path_factory.mktemp("team-release")
    (tmp / "prom").mkdir()
    params = small_params(tmp / "export-params.yaml", f"x{uuid.uuid4().hex[:6]}")
    argv = ["export", "--params", str(params), "--checkpoint", str(small_weights), "--data",
            str(small_prepared), "--out", "export", "--report", "export.json"]  # fmt: skip
    cifar10(*argv, env=team_mlflow.client_env(), cwd=tmp)
    stack = ReleaseStack((tmp / "export", team_mlflow.uri), tmp, prometheus_bin, small_prepared)
    stack.env = team_mlflow.client_env()  # controllers get the server's URL only
    yield stack
    stack.close()


def test_a_postgres_restart_during_a_release_does_not_lose_it(team_stack, team_mlflow):
    stack, good = team_stack, team_stack.versions["good"]
    failed_before = len(stack.load.failures)
    controller = stack.cli("start", "--version", str(good), wait=False)
    judged = stack.wait_for(
        controller, lambda r: r.step in ("shadow", "canary") and r.candidate_version == good
    )
    restarted_at = time.monotonic()
    team_mlflow.pg.restart(down_s=DOWN_S)
    restart_s = time.monotonic() - restarted_at
    _, err = controller.communicate(timeout=300)
    resumed = None
    if controller.returncode != 0:  # it died of the outage: the record lets a second start finish it
        resumed = stack.cli("start", "--version", str(good))
        assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-3000:]
    assert aliases.alias_version(stack.name, "production") == good, (controller.returncode, err[-3000:])
    labels = [e["label"] for e in stack.record().log]
    assert labels[-1] == "promoted" and judged.label in labels, labels
    assert stack.load.failures[failed_before:] == []
    outcome = (
        "rode it out" if resumed is None else f"died ({controller.returncode}); a second start resumed it"
    )
    print(f"PostgreSQL down {restart_s:.1f} s during step {judged.label}; the controller {outcome}")
