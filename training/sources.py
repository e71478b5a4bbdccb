"""Readers for the two CIFAR-10 sources: the official python archive and an image-folder tree.

Both return the same thing (uint8 N×32×32×3 arrays, labels and, for test images, the encoded bytes
a client would send), so everything downstream is independent of where the pixels came from.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.exit_codes import IntegrityError, Unavailable, UsageError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class DataError(UsageError):
    """The source is unusable; the message names the file, folder or URL at fault (exit code 2)."""


class DownloadUnavailable(Unavailable, DataError):
    """The download failed: the network or the server, not the data (exit code 3)."""


class ChecksumMismatch(IntegrityError, DataError):
    """The downloaded archive is not the one published (exit code 8)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an image-folder archive may unpack to (``data.archive_max_*`` in params.yaml).

    Checked from the archive's own index before anything is written, so a zip or tar bomb costs
    an error message, not the disk. CIFAR-10 as JPEG or PNG unpacks to 60,000 files and < 200 MB.
    """

    max_bytes: int = 2 << 30
    max_files: int = 250_000


@dataclass
class Split:
    images: np.ndarray  # uint8, N×32×32×3, RGB
    labels: np.ndarray  # int64, N
    encoded: list[tuple[str, bytes]] | None = None  # (file suffix, bytes) per image, test split only


def _md5(path: Path) -> str:
    import hashlib

    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` unless a copy with the right MD5 is already there."""
    if dest.exists() and _md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise DownloadUnavailable(
            f"could not download {url}: {exc}. Without internet access, point CIFAR10_SOURCE (or "
            "data.source in params.yaml) at a local image-folder archive."
        ) from exc
    got = _md5(tmp)
    if got != md5:
        tmp.unlink(missing_ok=True)
        raise ChecksumMismatch(f"checksum mismatch for {url}: expected MD5 {md5}, got {got}")
    tmp.replace(dest)
    return dest


def load_official(archive: Path, classes: tuple[str, ...]) -> tuple[Split, Split]:
    """Read the official ``cifar-10-python.tar.gz`` (pickled batches inside an MD5-checked archive)."""

    def batch(tar: tarfile.TarFile, name: str) -> tuple[np.ndarray, np.ndarray]:
        member = tar.extractfile(f"cifar-10-batches-py/{name}")
        if member is None:
            raise DataError(f"{archive}: missing cifar-10-batches-py/{name}")
        d = pickle.load(member, encoding="bytes")  # trusted: the archive's MD5 was verified
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), np.asarray(d[b"labels"], dtype=np.int64)

    with tarfile.open(archive, "r:gz") as tar:
        meta = pickle.load(tar.extractfile("cifar-10-batches-py/batches.meta"), encoding="bytes")
        names = tuple(n.decode() for n in meta[b"label_names"])
        if names != tuple(classes):
            raise DataError(f"{archive}: classes {names} differ from params.yaml data.classes {classes}")
        parts = [batch(tar, f"data_batch_{i}") for i in range(1, 6)]
        test_x, test_y = batch(tar, "test_batch")
    train = Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    encoded = [(".png", _png(img)) for img in test_x]
    return train, Split(test_x, test_y, encoded)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _find_root(path: Path) -> Path:
    """The folder holding ``train/`` and ``test/``: the path itself or one level below it."""
    candidates = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    for cand in candidates:
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise DataError(f"{path}: no train/ and test/ folders found (expected <root>/{{train,test}}/<class>/)")


def _read_image(path: Path) -> tuple[np.ndarray, bytes]:
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (32, 32):  # from the header: a huge image is refused before it is decoded
                raise DataError(f"wrong image size {im.size[0]}x{im.size[1]} (expected 32x32): {path}")
            im.load()
            rgb = im.convert("RGB")
    except Image.DecompressionBombError as exc:  # raised by open() itself, from the header
        raise DataError(f"wrong image size, far beyond 32x32 ({exc}): {path}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"corrupt or unreadable image: {path} ({exc})") from exc
    return np.asarray(rgb, dtype=np.uint8), data


def _read_split(folder: Path, classes: tuple[str, ...], keep_bytes: bool) -> Split:
    present = {p.name for p in folder.iterdir() if p.is_dir()}
    unknown, missing = sorted(present - set(classes)), sorted(set(classes) - present)
    if unknown or missing:
        raise DataError(
            f"{folder}: class folders do not match params.yaml data.classes"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"empty class folder (no .png/.jpg images): {folder / name}")
        files += found
        labels += [label] * len(found)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_read_image, files, chunksize=256))
    images = np.stack([r[0] for r in results])
    encoded = [(f.suffix.lower(), r[1]) for f, r in zip(files, results, strict=True)] if keep_bytes else None
    return Split(images, np.asarray(labels, dtype=np.int64), encoded)


def _check_size(path: Path, sizes: list[int], limits: ArchiveLimits) -> None:
    if len(sizes) > limits.max_files:
        raise DataError(
            f"{path}: {len(sizes)} entries, more than data.archive_max_files ({limits.max_files}); "
            "raise it in params.yaml if the archive is what you expect"
        )
    total = sum(sizes)
    if total > limits.max_bytes:
        raise DataError(
            f"{path}: unpacks to {total:,} bytes, more than data.archive_max_bytes ({limits.max_bytes:,}); "
            "raise it in params.yaml if the archive is what you expect"
        )


def extract(path: Path, dest: Path, limits: ArchiveLimits) -> None:
    """Unpack a zip or tar archive into ``dest``, within ``limits`` and never outside ``dest``.

    Tar members go through the ``data`` filter (no absolute paths, ``..``, device files or links
    leaving ``dest``); zip member names are sanitised by :mod:`zipfile` the same way.
    """
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                _check_size(path, [i.file_size for i in zf.infolist()], limits)
                zf.extractall(dest)
        else:
            with tarfile.open(path) as tar:
                _check_size(path, [m.size for m in tar.getmembers()], limits)
                tar.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"corrupt archive {path}: {exc}") from exc


def load_image_folder(
    path: Path, classes: tuple[str, ...], limits: ArchiveLimits | None = None
) -> tuple[Split, Split]:
    """Read ``<root>/{train,test}/<class>/*`` from a directory or an archive of one."""
    if not path.exists():
        raise DataError(f"data source not found: {path}")
    if path.is_dir():
        root = _find_root(path)
        return _read_split(root / "train", classes, False), _read_split(root / "test", classes, True)
    if not path.name.endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{path}: not a directory or a {'/'.join(ARCHIVE_SUFFIXES)} archive")
    with tempfile.TemporaryDirectory(prefix="cifar10-src-") as tmp:
        extract(path, Path(tmp), limits or ArchiveLimits())
        return load_image_folder(Path(tmp), classes)
