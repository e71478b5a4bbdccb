"""One typed loader for all of params.yaml: every section a frozen pydantic model, unknown keys refused.

The messages changed with the schema (issue 25): each now names the key's full path and the bad value,
so the patterns below match the new wording; what each case refuses is unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import yaml

from common import exit_codes
from common.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def test_the_repository_params_load_into_frozen_sections():
    params = load_params(ROOT / "params.yaml")
    for section in ("data", "model", "train", "evaluate", "mlflow", "export", "registry", "serving", "tune"):
        value = getattr(params, section)
        assert isinstance(value, pydantic.BaseModel) and value.model_config["frozen"], section
    assert params.profile == "cpu" and params.export.max_batch >= max(params.serving.preferred_batch_sizes)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        params.serving.kind = "KIND_GPU"  # type: ignore[misc]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda raw: raw.update(servng={}), r"unknown section\(s\) servng"),
        (lambda raw: raw["serving"].update(max_batch_size=64), r"serving.max_batch_size: unknown key"),
        (lambda raw: raw["export"]["tolerances"].update(bf16={}), 'export.tolerances: unknown key "bf16"'),
        (
            lambda raw: raw["profiles"]["cpu"]["train"].update(epoch=3),
            r"profiles.cpu.train.epoch: unknown key",
        ),
        (
            lambda raw: raw["profiles"]["cpu"].update(optimizer={}),
            r"profiles.cpu: unknown key\(s\) optimizer",
        ),
        (
            lambda raw: raw["serving"].update(kind="KIND_TPU"),
            'serving.kind: expected one of .*got "KIND_TPU"',
        ),
        (
            lambda raw: raw["tune"]["profiles"]["cpu"]["space"].update(
                {"train.learning_rate": {"low": 0.1, "high": 1}}
            ),
            "'train.learning_rate' is not a setting of a profile",
        ),
        (
            lambda raw: raw["tune"]["profiles"]["cpu"]["space"].update(
                {"train.lr": {"low": 0.0, "high": 1, "log": True}}
            ),
            "a log range needs low > 0",
        ),
        (
            lambda raw: raw["tune"]["profiles"]["cpu"].update(trails=3),
            r"tune.profiles.cpu.trails: unknown key",
        ),
        (
            lambda raw: raw["tune"].update(pruner="hyperband"),
            'tune.pruner: expected one of .*got "hyperband"',
        ),
    ],
)
def test_a_typo_fails_at_load_time_with_its_place_named(tmp_path, edit, message):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match=message):
        load_params(path)


def test_the_classifier_batch_limit_is_one_key():
    """export.max_batch is the only place: the serving section must not state it a second time."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    keys = [
        f"{section}.{key}" for section, values in raw.items() if isinstance(values, dict) for key in values
    ]
    assert [k for k in keys if k.endswith(".max_batch") or k.endswith(".max_batch_size")] == [
        "export.max_batch"
    ]
    assert "max_batch_size" not in {*type(load_params(ROOT / "params.yaml").serving).model_fields}


def test_the_docs_exit_code_table_is_the_code_table():
    readme = (ROOT / "docs" / "exit-codes.md").read_text()  # the table moved from the README (issue 25)
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, re.M))
    assert {int(k): v for k, v in table.items()} == exit_codes.TABLE


def test_overrides_reach_the_logged_params_yaml():
    """A run logs ``params.raw`` as its params.yaml: an override must show there, in its profile."""
    from common.params import with_overrides

    params = load_params(ROOT / "params.yaml")
    changed = with_overrides(params, ["train.max_minutes=0.05", "serving.preferred_batch_sizes=[8, 16]"])
    assert changed.train.max_minutes == 0.05
    assert changed.serving.preferred_batch_sizes == (8, 16)
    assert changed.raw["profiles"][params.profile]["train"]["max_minutes"] == 0.05
    assert changed.raw["serving"]["preferred_batch_sizes"] == [8, 16]
    assert params.raw == load_params(ROOT / "params.yaml").raw  # the original is left alone
    with pytest.raises(ValueError, match=r"profiles\.cpu\.train\.max_minute: unknown key"):
        with_overrides(params, ["train.max_minute=1"])
