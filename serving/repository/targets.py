"""Where a repository is written: a folder (swapped in atomically) or S3 (published in a safe order).

:func:`open_repository` turns ``--repository`` (a folder or an ``s3://`` URI) into one of the two;
:mod:`serving.rollout.apply` and :mod:`registry.sync` use either through the same five members:
``uri``, ``local`` (a folder holding what was last written), ``lock()``, ``write(spec, prune)``,
``prune()`` and ``deployed_spec()``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from common.stores import StoreError
from serving.repository.atomic_fs import repository_lock
from serving.repository.build import build_repository, read_deployed_spec
from serving.repository.s3_repository import S3Repository
from serving.repository.spec import RepositorySpec


class FolderRepository:
    """A repository folder; every write is one atomic swap, so there is nothing to prune later."""

    def __init__(self, path: Path):
        self.path = Path(path).absolute()

    @property
    def uri(self) -> str:
        return str(self.path)

    @property
    def local(self) -> Path:
        return self.path

    def lock(self, timeout_s: float | None = None) -> contextlib.AbstractContextManager[None]:
        return repository_lock(self.path, timeout_s=timeout_s)

    def write(self, spec: RepositorySpec, prune: bool = False) -> bool:
        return build_repository(spec, self.path)

    def prune(self) -> bool:
        return False

    def check(self) -> None:
        """Nothing to reach: a folder is created when it is first written."""

    def deployed_spec(self) -> RepositorySpec | None:
        return read_deployed_spec(self.path)


Repository = FolderRepository | S3Repository


def open_repository(location: str | Path | Repository, cache: Path | None = None) -> Repository:
    """A folder, or an ``s3://host:port/bucket/prefix`` URI mirrored under ``cache``."""
    if isinstance(location, FolderRepository | S3Repository):
        return location
    text = str(location)
    if text.startswith("s3://"):
        return S3Repository.at(text, Path(cache or "artifacts/registry_cache"))
    if "://" in text:
        raise StoreError(f"model repository {text!r}: use a folder or s3://host:port/bucket/prefix")
    return FolderRepository(Path(location))
