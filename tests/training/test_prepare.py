"""The data stage on synthetic image folders: outputs, stratification, and every kind of bad input."""

import functools
import hashlib
import http.server
import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from commands.main import main as cifar10
from common.params import DataConfig
from tests.conftest import CLASSES, huge_png, make_image_folder, tar_folder
from training.prepare import prepare, stratified_split
from training.sources import DataError, download

CFG = DataConfig(val_per_class=2)


def _cfg(src: Path) -> DataConfig:
    return DataConfig(source=str(src), val_per_class=2)


def test_prepare_from_folder_writes_arrays_split_and_test_images(image_folder, tmp_path):
    out = tmp_path / "prepared"
    meta = prepare(_cfg(image_folder), out)
    assert meta["counts"] == {"train": 100, "val": 20, "test": 30}
    x = np.load(out / "train_x.npy")
    assert x.shape == (100, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(np.load(out / "val_y.npy")).tolist() == [2] * 10
    assert len(list((out / "test_images").rglob("*.*"))) == 30
    assert sorted(p.name for p in (out / "test_images").iterdir()) == sorted(CLASSES)
    assert json.loads((out / "meta.json").read_text())["val_class_distribution"] == [0.1] * 10


def test_prepare_cli_takes_an_archive_from_the_environment(image_folder, tmp_path, monkeypatch):
    archive = tar_folder(image_folder, tmp_path / "src.tar.gz")
    params = tmp_path / "params.yaml"
    params.write_text("profile: p\ndata: {source: cifar10, val_per_class: 2}\nprofiles: {p: {}}\n")
    monkeypatch.setenv("CIFAR10_SOURCE", str(archive))
    with pytest.raises(SystemExit) as done:
        cifar10(["data", "prepare", "--params", str(params), "--out", str(tmp_path / "out")])
    assert done.value.code == 0
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["source"] == str(archive.resolve())
    assert meta["counts"]["test"] == 30


def test_a_given_config_is_not_overridden_by_the_environment(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR10_SOURCE", str(tmp_path / "elsewhere.tar.gz"))
    meta = prepare(DataConfig(source=str(image_folder), val_per_class=2), tmp_path / "out")
    assert meta["source"] == str(image_folder.resolve())


def test_test_images_keep_their_original_bytes(image_folder, tmp_path):
    out = tmp_path / "prepared"
    prepare(_cfg(image_folder), out)
    src = image_folder / "test" / "cat" / "0001.png"
    assert (out / "test_images" / "cat" / "0001.png").read_bytes() == src.read_bytes()


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 20)
    tr, va = stratified_split(labels, 5, seed=3)
    assert not set(tr) & set(va) and len(tr) + len(va) == 200
    assert np.bincount(labels[va]).tolist() == [5] * 10
    assert np.array_equal(va, stratified_split(labels, 5, seed=3)[1])
    assert not np.array_equal(va, stratified_split(labels, 5, seed=4)[1])


def _expect_failure(src: Path, tmp_path: Path, match: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match):
        prepare(_cfg(src), out)
    assert not out.exists(), "a failed prepare must leave no output behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "temporary folder left behind"


def test_corrupt_image_is_named(image_folder, tmp_path):
    bad = image_folder / "train" / "dog" / "0003.png"
    bad.write_bytes(b"not an image at all")
    _expect_failure(image_folder, tmp_path, "corrupt or unreadable image: .*dog/0003.png")


def test_wrong_size_is_named(image_folder, tmp_path):
    Image.new("RGB", (28, 32)).save(image_folder / "test" / "frog" / "0000.jpg")
    _expect_failure(image_folder, tmp_path, "wrong image size 28x32.*frog/0000.jpg")


def test_unknown_and_missing_class_folders(image_folder, tmp_path):
    (image_folder / "train" / "ship").rename(image_folder / "train" / "boat")
    _expect_failure(image_folder, tmp_path, "unknown: boat; missing: ship")


def test_empty_class_folder(image_folder, tmp_path):
    for f in (image_folder / "test" / "bird").iterdir():
        f.unlink()
    _expect_failure(image_folder, tmp_path, "empty class folder.*test/bird")


def test_missing_source_and_corrupt_archive(tmp_path):
    _expect_failure(tmp_path / "nope.tar.gz", tmp_path, "not found")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08garbage")
    _expect_failure(broken, tmp_path, "corrupt archive")


def test_folder_without_splits(tmp_path):
    make_image_folder(tmp_path / "flat", {"train": 1})
    _expect_failure(tmp_path / "flat", tmp_path, "no train/ and test/ folders")


def test_unreachable_download_names_the_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    with pytest.raises(DataError, match=f"could not download {url}"):
        download(url, tmp_path / "a.tar.gz", "0" * 32, timeout=5)
    assert not list(tmp_path.iterdir())


def test_checksum_mismatch_names_the_url(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    (served / "a.tar.gz").write_bytes(b"tampered")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/a.tar.gz"
        dest = tmp_path / "dl" / "a.tar.gz"
        with pytest.raises(DataError, match=f"checksum mismatch for {url}"):
            download(url, dest, hashlib.md5(b"original").hexdigest(), timeout=5)
        assert not dest.exists()
        good = download(url, dest, hashlib.md5(b"tampered").hexdigest(), timeout=5)
        assert good.read_bytes() == b"tampered"
    finally:
        httpd.shutdown()


def test_archive_limits_are_checked_before_anything_is_unpacked(image_folder, tmp_path):
    """A zip or tar bomb costs an error naming the limit, not the disk (sizes come from the index)."""
    import tarfile
    import zipfile

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cifar/train/cat/0000.png", b"\0" * (8 << 20))  # 8 MiB of zeros: ~8 KiB packed
    assert bomb.stat().st_size < 64 << 10
    with pytest.raises(DataError, match=r"unpacks to 8,388,608 bytes, more than data.archive_max_bytes"):
        prepare(DataConfig(source=str(bomb), archive_max_bytes=1 << 20), tmp_path / "a")
    many = tar_folder(image_folder, tmp_path / "many.tar.gz")
    with pytest.raises(DataError, match=r"entries, more than data.archive_max_files \(100\)"):
        prepare(DataConfig(source=str(many), archive_max_files=100), tmp_path / "b")
    escape = tmp_path / "escape.tar"
    with tarfile.open(escape, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DataError, match="corrupt archive"):
        prepare(DataConfig(source=str(escape)), tmp_path / "c")
    assert not (tmp_path / "outside.txt").exists()
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "c"))


def test_a_huge_image_is_refused_from_its_header(image_folder, tmp_path):
    (image_folder / "train" / "cat" / "huge.png").write_bytes(huge_png(20_000, 20_000))  # 400 Mpx
    with pytest.raises(DataError, match=r"wrong image size.*huge\.png"):
        prepare(_cfg(image_folder), tmp_path / "out")
