"""Packing weights for the trip back from the GPU machine, and the device script, run here on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, make_image_folder, tar_folder
from training.checkpoint import load_weights, read_metadata
from training.weight_pack import PACK_FILE, PackError, pack, unpack


def test_a_pack_unpacks_to_the_weights_within_half_a_quantisation_step(small_weights, tmp_path):
    record = pack(small_weights, tmp_path / "pack", part_bytes=40_000)
    assert len(record["parts"]) > 1 and all(p["bytes"] <= 40_000 for p in record["parts"])
    assert record["bytes"] < 0.35 * small_weights.stat().st_size  # int8 + fp16: about a quarter of fp32
    out = unpack(tmp_path / "pack", tmp_path / "back.safetensors")
    original, back = load_weights(small_weights), load_weights(out)
    assert set(original) == set(back) and read_metadata(out) == read_metadata(small_weights)
    for name, w in original.items():
        if w.is_floating_point() and w.ndim >= 2:  # int8 per output channel: |error| <= scale / 2
            scale = w.abs().reshape(w.shape[0], -1).amax(1) / 127
            err = (back[name] - w).abs().reshape(w.shape[0], -1).amax(1)
            assert torch.all(err <= scale * 0.5 * (1 + 2e-3) + 1e-8), name  # + the fp16 rounding of scale
        elif w.is_floating_point():  # fp16
            torch.testing.assert_close(back[name], w.half().float())
        else:
            assert torch.equal(back[name], w)


def test_a_missing_altered_or_reordered_part_is_refused(small_weights, tmp_path):
    record = pack(small_weights, tmp_path / "pack", part_bytes=40_000)
    first, second = (tmp_path / "pack" / p["file"] for p in record["parts"][:2])
    data = first.read_bytes()
    first.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(PackError, match="does not match its SHA-256"):
        unpack(tmp_path / "pack", tmp_path / "x.safetensors")
    first.write_bytes(data)
    meta = json.loads((tmp_path / "pack" / PACK_FILE).read_text())
    meta["parts"][0], meta["parts"][1] = meta["parts"][1], meta["parts"][0]
    (tmp_path / "pack" / PACK_FILE).write_text(json.dumps(meta))
    with pytest.raises(PackError, match="do not match the pack's SHA-256"):
        unpack(tmp_path / "pack", tmp_path / "x.safetensors")
    second.unlink()
    with pytest.raises(PackError, match="is missing"):
        unpack(tmp_path / "pack", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.slow
@pytest.mark.full  # 20-minute budget: `make test-full` runs it
def test_the_device_script_runs_on_the_cpu_without_mlflow_and_brings_back_what_fits(tmp_path, monkeypatch):
    """Tiny settings; MLflow and DVC made unimportable, as on the device machine."""
    mirror = tar_folder(make_image_folder(tmp_path / "src", {"train": 20, "test": 3}), tmp_path / "m.tar.gz")
    out = tmp_path / "OUT"
    settings = [
        "model.depth=10", "model.width=1", "train.epochs=1000", "train.batch_size=32", "train.num_workers=0",
        "train.amp=none", "train.channels_last=false", "train.trivial_augment=false", "train.cutout=0",
        "train.eval_batch_size=100", "train.ema_decay=0.9", "data.val_per_class=4",
        "export.parity_images=20", "export.max_batch=64",
    ]  # fmt: skip
    work = tmp_path / "work"
    argv = ["--mirror", str(mirror), "--out", str(out), "--work", str(work), "--minutes", "0.05"]
    argv += [a for s in settings for a in ("--set", s)]
    code = (
        "import sys; sys.modules['mlflow'] = None; sys.modules['dvc'] = None\n"
        f"from scripts.device_run import main; main({argv!r})"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)
    assert {"report.json", "pack.json", "curve.png", "run.tar.gz"} <= {p.name for p in files}
    report = json.loads((out / "report.json").read_text())
    assert report["train_seconds"] >= 3.0 and 1 <= report["epochs_run"] < 1000  # the 3 s budget ended it
    assert report["onnx_fp32_parity"]["passed"] and report["train"]["max_minutes"] == 0.05
    assert set(report["test_accuracy"]) == set(report["test_accuracy_packed"]) == {"plain", "tta_flip"}
    assert len(report["curve"]) == report["epochs_run"] and report["device"].startswith("CPU")
    import tarfile

    with tarfile.open(out / "run.tar.gz") as tar:  # the run's record, without the (large) weights
        names = tar.getnames()
    assert "run/run.json" in names and not any("/artifacts/model" in n for n in names)
    # Back on the CPU side: unpack, import the run, export into it and register, as the README says.
    from commands.main import main as cifar10
    from common.params import DataConfig, ExportConfig, RegistryConfig
    from export.stage import export_model
    from registry import aliases, store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with tarfile.open(out / "run.tar.gz") as tar:
        tar.extractall(tmp_path / "back", filter="data")

    def cli(*argv: str) -> None:
        with pytest.raises(SystemExit) as done:
            cifar10(["registry", "--params", str(ROOT / "params.yaml"), *argv])
        assert done.value.code == 0

    back = tmp_path / "back"
    cli("unpack", str(out), "--out", str(back / "model.safetensors"))
    cli("import-run", str(back / "run"), "--run-file", str(back / "run.json"))
    run_id = json.loads((tmp_path / "back" / "run.json").read_text())["run_id"]
    manifest = export_model(
        tmp_path / "back" / "model.safetensors",
        tmp_path / "work" / "prepared",
        DataConfig(val_per_class=4),
        ExportConfig(precisions=("fp32",), parity_images=20, calibration_images=32, max_batch=64),
        tmp_path / "back" / "export",
        tmp_path / "back" / "run.json",
    ).model_dump(mode="json")
    assert manifest["mlflow_run_id"] == run_id and manifest["artifacts"][0]["passed"]
    cfg = RegistryConfig(model_prefix="device")
    store.register_manifest(tmp_path / "back" / "export" / "manifest.json", cfg)
    version = aliases.resolve(cfg.registered_name("fp32"), version=1)
    assert version.tags["source_run_id"] == run_id  # the registry names the GPU run it came from
