"""The schema: strict types, one place for defaults, and one validation whichever way a value arrives."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from common import params_schema
from common.params import Params, ParamsError, load_params, resolve, with_overrides
from common.params_defaults import DEFAULTS_FILE
from serving.repository.spec import RepositorySpec, ServedModel

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = [
    c for c in vars(params_schema).values() if isinstance(c, type) and issubclass(c, params_schema.Section)
]
UNSET_MEANS_NO_BOUND = {params_schema.Tolerance, params_schema.SearchParam}  # None: no such bound


def _file(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_schema_holds_no_default_value():
    """A setting's default is written in params.yaml only: every schema field must be given."""
    assert len(SECTIONS) > 10
    for section in set(SECTIONS) - UNSET_MEANS_NO_BOUND - {params_schema.Section}:
        optional = [name for name, f in section.model_fields.items() if not f.is_required()]
        assert not optional, f"{section.__name__} has defaults in code: {optional}"


def test_a_section_built_in_code_is_the_one_params_yaml_states():
    loaded = resolve(DEFAULTS_FILE, env={}).params  # the file alone: no CIFAR10_* variable (CI sets one)
    built = Params(profile=loaded.profile)
    for name in type(loaded).model_fields:
        if name != "raw":
            assert getattr(built, name) == getattr(loaded, name), name


def test_the_repository_spec_takes_the_serving_settings_of_params_yaml():
    """The spec once said max_queue_delay_us 2000 and python_queue_delay_us 500 where the file said 0."""
    serving = load_params(DEFAULTS_FILE).serving
    model = ServedModel("m", "onnxruntime", (), 1, 8)
    spec = RepositorySpec((model,), "m", ("a", "b"), (0, 0, 0), (1, 1, 1))
    for obj in (model, spec):
        for name in type(serving).model_fields:
            if hasattr(obj, name) and name != "gpu":
                assert getattr(obj, name) == getattr(serving, name), name


def test_no_class_in_the_pipeline_restates_a_serving_or_release_setting():
    """A dataclass field named like a serving/release/optimize key must not carry a literal default."""
    keys = {k for c in (params_schema.ServingConfig, params_schema.ReleaseConfig) for k in c.model_fields}
    allowed = {
        ("Release", "shadow_fraction"),  # a release's state (no shadow yet), not a setting
        ("ReleaseRecord", "shadow_fraction"),
        ("Panel", "kind"),  # a Grafana panel's type
        ("Container", "gpu"),  # the GPU a trtexec container runs on
    }
    found = []
    for package in (
        "common",
        "training",
        "export",
        "registry",
        "serving",
        "monitoring",
        "optimize",
        "release",
    ):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ClassDef):
                    continue
                for item in node.body:
                    if (
                        isinstance(item, ast.AnnAssign)
                        and isinstance(item.target, ast.Name)
                        and item.target.id in keys
                        and isinstance(item.value, ast.Constant | ast.Tuple | ast.BinOp)
                        and getattr(item.value, "value", 0) is not None
                        and (node.name, item.target.id) not in allowed
                    ):
                        found.append(f"{path.relative_to(ROOT)}:{node.name}.{item.target.id}")
    assert not found


@pytest.mark.parametrize(
    "where,key,value,line",
    [
        ("serving", "max_queue_delay_us", "2ms", 'serving.max_queue_delay_us: expected int >= 0, got "2ms"'),
        ("train", "lr", "0.1", 'profiles.cpu.train.lr: expected number > 0, got "0.1"'),
        ("train", "hflip", "no", 'profiles.cpu.train.hflip: expected true or false, got "no"'),
        ("train", "epochs", "6", 'profiles.cpu.train.epochs: expected int >= 1, got "6"'),
        (
            "release",
            "shadow_fraction",
            1.5,
            "release.shadow_fraction: expected number >= 0 and <= 1, got 1.5",
        ),
        ("export", "opset", 12, "export.opset: expected int >= 17, got 12"),
    ],
)
def test_a_bad_value_is_named_with_its_path_whichever_way_it_comes(tmp_path, where, key, value, line):
    """The file, ``--set``, a ``CIFAR10_*`` variable and ``with_overrides`` share one validation."""
    doc = yaml.safe_load(DEFAULTS_FILE.read_text())
    section = doc["profiles"]["cpu"][where] if where == "train" else doc[where]
    section[key] = value
    routes = {"file": lambda: load_params(_file(tmp_path, doc))}
    text = yaml.safe_dump(value).strip().removesuffix("...").strip()
    routes["--set"] = lambda: resolve(DEFAULTS_FILE, sets=[f"{where}.{key}={text}"])
    variable = f"CIFAR10_{where.upper()}__{key.upper()}"
    if where == "train":
        variable = f"CIFAR10_PROFILES__CPU__TRAIN__{key.upper()}"
    routes["env"] = lambda: resolve(DEFAULTS_FILE, env={variable: text})
    routes["with_overrides"] = lambda: with_overrides(load_params(DEFAULTS_FILE), [f"{where}.{key}={text}"])
    for route, load in routes.items():
        with pytest.raises(ParamsError) as caught:
            load()
        assert str(caught.value) == line, route
        assert caught.value.exit_code == 2


def test_where_each_value_came_from_is_kept(tmp_path):
    mine = _file(tmp_path, {"serving": {"instance_count": 2}})
    resolved = resolve(mine, sets=["train.lr=0.2"], env={"CIFAR10_RELEASE__MAX_PSI": "0.2"})
    assert resolved.params.serving.instance_count == 2 and resolved.params.train.lr == 0.2
    assert resolved.params.release.max_psi == 0.2
    assert resolved.sources["serving.instance_count"] == str(mine)
    assert resolved.sources["profiles.cpu.train.lr"] == "--set"
    assert resolved.sources["release.max_psi"] == "env CIFAR10_RELEASE__MAX_PSI"
    assert resolved.sources["serving.kind"].endswith("params.yaml")


def test_dvc_exp_run_set_param_writes_a_file_the_same_validation_reads(tmp_path):
    """``dvc exp run -S`` edits params.yaml in place; the edited file is the file layer, checked the same."""
    doc = yaml.safe_load(DEFAULTS_FILE.read_text())
    doc["profiles"]["cpu"]["train"]["amp"] = "int4"
    with pytest.raises(ParamsError, match=r"profiles\.cpu\.train\.amp: expected one of .*got \"int4\""):
        load_params(_file(tmp_path, doc))


def test_a_cli_prints_one_error_line_for_a_bad_params_file(tmp_path):
    bad = _file(tmp_path, {"serving": {"max_queue_delay_us": "2ms"}})
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "commands", "registry", "--params", str(bad), "list"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        'error: serving.max_queue_delay_us: expected int >= 0, got "2ms"'
    )


def test_a_new_profile_states_only_what_differs_from_the_first(tmp_path):
    mine = _file(tmp_path, {"profile": "tiny", "profiles": {"tiny": {"train": {"epochs": 2}}}})
    params, first = load_params(mine), yaml.safe_load(DEFAULTS_FILE.read_text())["profiles"]
    base = next(iter(first.values()))
    assert params.profile == "tiny" and params.train.epochs == 2
    assert params.train.momentum == base["train"]["momentum"] and params.model.depth == base["model"]["depth"]
