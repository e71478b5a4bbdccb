"""``cifar10 params check|show``: one error line with the key's path, every setting with its origin."""

from __future__ import annotations

import json

from click.testing import CliRunner

from commands.main import cli


def test_check_accepts_the_project_params_and_names_a_bad_key(tmp_path):
    runner = CliRunner()
    done = runner.invoke(cli, ["params", "check"])
    assert done.exit_code == 0 and done.output.startswith("ok: params.yaml (profile ")
    bad = tmp_path / "params.yaml"
    bad.write_text("serving:\n  max_queue_delay_us: 2ms\n")
    done = runner.invoke(cli, ["params", "check", "--params", str(bad)])
    assert done.exit_code == 2
    assert done.output.strip() == 'error: serving.max_queue_delay_us: expected int >= 0, got "2ms"'


def test_show_says_where_each_value_came_from(tmp_path, monkeypatch):
    mine = tmp_path / "mine.yaml"
    mine.write_text("serving:\n  instance_count: 3\n")
    monkeypatch.setenv("CIFAR10_RELEASE__MAX_PSI", "0.25")
    done = CliRunner().invoke(
        cli, ["params", "show", "--params", str(mine), "--set", "train.lr=0.2", "--json"]
    )
    assert done.exit_code == 0, done.output
    rows = {row["key"]: row for row in json.loads(done.output)}
    assert rows["serving.instance_count"] == {
        "key": "serving.instance_count",
        "value": 3,
        "source": str(mine),
    }
    assert rows["release.max_psi"]["source"] == "env CIFAR10_RELEASE__MAX_PSI"
    profile = rows["profile"]["value"]
    assert rows[f"profiles.{profile}.train.lr"] == {
        "key": f"profiles.{profile}.train.lr", "value": 0.2, "source": "--set"
    }  # fmt: skip
    assert rows["serving.kind"]["source"].endswith("params.yaml")
    text = CliRunner().invoke(cli, ["params", "show"]).output.splitlines()
    assert len(text) == len(rows) and all(" = " in line and "  # " in line for line in text)
