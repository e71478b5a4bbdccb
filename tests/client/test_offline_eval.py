"""``client offline-eval`` / ``client confusion`` against a real Triton and a private MLflow registry.

The server serves ``wrn_fp32`` versions 1 and 2 and its ensemble routes to 2; the registry holds
versions 1-3 of ``cifar10-wrn-fp32`` and each test points the ``production`` alias where it needs it.
"""

from __future__ import annotations

import json

import pytest

from tests.client.conftest import PRODUCTION, cli_args
from tests.client.test_batch import read_rows
from tests.client.test_cli import run_cli

pytestmark = pytest.mark.triton
NAME = "cifar10-wrn-fp32"
FILES = ("predictions.csv", "sample_predictions.json", "metrics.json", "confusion_matrix.png", "summary.json")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A private MLflow store for this module: ``cifar10-wrn-fp32`` versions 1-3, no aliases yet.

    Created once (a fresh sqlite store costs seconds of migrations); each test gets its own experiment.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from common import tracking

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        # mlflow.set_registry_uri() also exports MLFLOW_REGISTRY_URI, after which
        # common.tracking.configure() leaves the registry URI alone: a second store in the same process
        # would still see the first one's registry. Point both at this store, and undo it afterwards.
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.chdir(root)  # new experiments put their artifacts under the working directory
        mlflow.set_registry_uri(uri)
        try:
            client = MlflowClient(tracking.configure())
            client.create_registered_model(NAME)
            (root / "artifact").mkdir()
            for _ in range(3):
                client.create_model_version(NAME, str(root / "artifact"), tags={"parity_passed": "true"})
            yield client
        finally:
            mlflow.set_registry_uri(None)


@pytest.fixture
def registry(store):
    for alias in list(store.get_registered_model(NAME).aliases):
        store.delete_registered_model_alias(NAME, alias)
    return store


@pytest.fixture
def experiment(request) -> str:
    return "offline-eval-" + "".join(c if c.isalnum() else "-" for c in request.node.name)


def _runs(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _eval(triton, images, out, experiment, *extra: str) -> int:
    argv = ["offline-eval", *cli_args(triton), "--images", str(images), "--out", str(out)]
    return run_cli([*argv, "--experiment", experiment, *extra])


def test_evaluates_when_versions_agree_and_logs_a_run(
    triton, registry, experiment, labelled_images, tmp_path, capsys
):
    registry.set_registered_model_alias(NAME, "production", str(PRODUCTION))
    out = tmp_path / "eval"
    assert _eval(triton, labelled_images, out, experiment, "--per-class", "3", "-c", "4") == 0
    assert f"{NAME} v{PRODUCTION}: accuracy" in capsys.readouterr().out

    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["registered_model"] == NAME and metrics["model_version"] == PRODUCTION
    assert metrics["alias"] == "production" and metrics["triton_model"] == "wrn_fp32"
    assert metrics["tested_samples"] == 30 and metrics["failed_samples"] == 0
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert set(metrics["per_class"]) == {r["true_label"] for r in read_rows(out)}
    assert sum(map(sum, metrics["confusion_matrix"])) == 30
    samples = json.loads((out / "sample_predictions.json").read_text())
    assert len(samples) == 10 and len({s["true_label"] for s in samples}) == 10  # one per class
    assert all(len(s["top_k"]) == 3 and s["top_k"][0]["label"] == s["predicted_label"] for s in samples)

    (run,) = _runs(registry, experiment)
    assert run.info.run_id == metrics["mlflow_run_id"]
    assert run.data.tags["registered_model"] == NAME and run.data.tags["model_version"] == str(PRODUCTION)
    assert run.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["tested_samples"] == 30
    logged = {a.path for a in registry.list_artifacts(run.info.run_id)}
    assert set(FILES) <= logged

    # The same figure from the CSV alone, attached to the run afterwards.
    png = tmp_path / "redrawn.png"
    assert run_cli(["confusion", "--csv", str(out / "predictions.csv"), "--out", str(png),
                    "--mlflow-run-id", run.info.run_id]) == 0  # fmt: skip
    assert png.stat().st_size > 1000
    assert "redrawn.png" in {a.path for a in registry.list_artifacts(run.info.run_id)}
    assert f"accuracy {metrics['accuracy'] * 100:.2f}% (n=30)" in capsys.readouterr().out


@pytest.mark.parametrize(("mode", "alias_version"), [("bytes", 1), ("tensor", 3)])
def test_refuses_a_version_mismatch(
    triton, registry, experiment, labelled_images, tmp_path, capsys, mode, alias_version
):
    registry.set_registered_model_alias(NAME, "production", str(alias_version))
    out = tmp_path / "eval"
    assert _eval(triton, labelled_images, out, experiment, "--mode", mode) == 6
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and f"v{alias_version}" in err
    assert not out.exists()  # nothing reported for the wrong version
    assert _runs(registry, experiment) == []


def test_tensor_mode_evaluates_the_registry_version_explicitly(
    triton, registry, experiment, labelled_images, tmp_path
):
    """Version 1 is not what the ensemble routes to, but it is served: tensor mode can evaluate it."""
    registry.set_registered_model_alias(NAME, "production", "1")
    out = tmp_path / "eval"
    assert (
        _eval(
            triton, labelled_images, out, experiment, "--mode", "tensor", "--protocol", "grpc", "--no-mlflow"
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_version"] == 1 and metrics["tested_samples"] == 40
    assert "mlflow_run_id" not in metrics and _runs(registry, experiment) == []
    served = json.loads((out / "summary.json").read_text())["server_metrics"]["counters"]
    assert served["nv_inference_count"] == {"model=wrn_fp32,version=1": 40.0}


def test_registry_problems_exit_5(triton, registry, experiment, labelled_images, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        _eval(triton, labelled_images, out, experiment, "--precision", "int8") == 5
    )  # no such registered model
    assert _eval(triton, labelled_images, out, experiment) == 5  # production alias not set
    assert "no alias 'production'" in capsys.readouterr().err
    # Accepting the newest version (3) instead gets past the registry, and then the server disagrees.
    assert _eval(triton, labelled_images, out, experiment, "--allow-newest") == 6
    assert _eval(triton, labelled_images, out, experiment, "--version", str(PRODUCTION), "--no-mlflow") == 0


def test_needs_a_labelled_folder(triton, registry, experiment, tmp_path, capsys):
    registry.set_registered_model_alias(NAME, "production", str(PRODUCTION))
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "x.png").write_bytes(b"")
    assert _eval(triton, flat, tmp_path / "eval", experiment) == 2
    assert "unlabelled" in capsys.readouterr().err


@pytest.mark.parametrize("kept", [("bird", "cat", "dog"), ("bird", "cat", "dog", "unicorn")])
def test_refuses_a_folder_of_other_classes_naming_both_lists(
    triton, registry, experiment, labelled_images, tmp_path, capsys, kept
):
    """A three-class test folder (a subset of the ten served classes, or with a class the model lacks)
    would score a number about other label sets: refused before any request, exit 2, nothing logged."""
    import shutil

    folder = tmp_path / "three"
    for name in kept:
        source = labelled_images / name if (labelled_images / name).is_dir() else labelled_images / "cat"
        shutil.copytree(source, folder / name)
    registry.set_registered_model_alias(NAME, "production", str(PRODUCTION))
    out = tmp_path / "eval"
    assert _eval(triton, folder, out, experiment) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(sorted(kept)) in err and "'airplane'" in err, err
    assert not out.exists() and _runs(registry, experiment) == []
