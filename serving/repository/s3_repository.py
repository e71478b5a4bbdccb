"""A Triton model repository in S3, published from a local mirror in an order no loading server can catch.

Object storage has no directory swap, so the atomic build of :mod:`serving.repository.build` happens
in a local mirror (beside the registry cache) and is then published object by object:

1. every new or changed object that is not a ``config.pbtxt`` (new version folders, quality
   references, python files), each read back and checked by size and SHA-256 before the next;
2. then the changed ``config.pbtxt`` files: a config only ever names files already published;
3. then ``.spec.json``, the record of what the repository now is (:meth:`deployed_spec`);
4. objects nothing names any more (a retired version) are deleted last, by :meth:`prune`, and only
   once the servers moved off them: a rollout (``sync --server``) prunes after its server loaded
   the new configs (:mod:`serving.rollout.apply`). A plain sync cannot know whether a polling
   server is still copying them, so it leaves them for the next rollout, or for ``sync --prune``
   when the operator says every server has moved.

A load (or poll) at any moment therefore sees either the old config with its files or the new one
with its files. Unchanged objects (same size and recorded SHA-256) are not uploaded again. Every key
is the prefix plus a path that stays inside it (:meth:`common.stores.S3Url.key`): nothing outside the
prefix is written or deleted. A failure stops the publish where it is, with the old configs still
naming their old files, and publishing again completes it.

Known limit: a python model whose *code* changes is rewritten in place (its version is always 1), so
a server loading it between steps 1 and 2 may pair new code with the old config; our rollouts load
only after publishing, so only an outside poller could. Promotions, rollbacks and releases add
version folders and change configs, which the order above covers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from common.exit_codes import IntegrityError
from common.object_store import Bucket, Stat, file_sha256
from common.stores import S3Url
from serving.repository.atomic_fs import repository_lock
from serving.repository.build import SPEC_FILE, build_repository
from serving.repository.spec import RepositorySpec, spec_from_dict

log = logging.getLogger(__name__)
CONFIG = "config.pbtxt"
DIR_MARKER = ".folder"  # S3 has no empty folders; Triton needs the ensemble's version folder to exist


class S3Repository:
    """The repository at ``url``; ``mirror`` is the local folder it is built in first."""

    def __init__(self, url: S3Url, mirror: Path, bucket: Bucket | None = None):
        self.url, self.mirror = url, Path(mirror).absolute()
        self.bucket = bucket or Bucket(url.endpoint, url.bucket)
        self._stale: list[str] = []

    @classmethod
    def at(cls, uri: str, cache: Path) -> S3Repository:
        """The repository ``uri``, mirrored under ``cache/s3/<host>_<port>/<bucket>/<prefix>``."""
        url = S3Url.parse(uri)
        return cls(url, Path(cache) / "s3" / f"{url.host}_{url.port}" / url.bucket / url.prefix)

    @property
    def uri(self) -> str:
        return self.url.uri

    @property
    def local(self) -> Path:
        """A byte-identical copy of what was last published (served versions' files included)."""
        return self.mirror

    def lock(self, timeout_s: float | None = None) -> contextlib.AbstractContextManager[None]:
        """One writer per machine (the mirror's lock); across machines a release's claim serialises."""
        return repository_lock(self.mirror, timeout_s=timeout_s)

    def check(self) -> None:
        """The endpoint answers, takes the credentials and has the bucket (before any download)."""
        self.bucket.check()

    def deployed_spec(self) -> RepositorySpec | None:
        data = self.bucket.get(self.url.key(SPEC_FILE))
        return spec_from_dict(json.loads(data)) if data is not None else None

    def write(self, spec: RepositorySpec, prune: bool = False) -> bool:
        """Build ``spec`` in the mirror and publish it; whether any object was written or deleted."""
        with self.lock():
            build_repository(spec, self.mirror)
            changed = self.publish()
            if prune:
                changed = self.prune() or changed
            return changed

    def _local(self) -> dict[str, Path]:
        """Relative path -> file of the mirror; an empty folder becomes a marker object inside it."""
        files: dict[str, Path] = {}
        for folder, subdirs, names in os.walk(self.mirror):
            rel_dir = os.path.relpath(folder, self.mirror)
            for name in names:
                files[os.path.normpath(os.path.join(rel_dir, name))] = Path(folder) / name
            if not names and not subdirs and rel_dir != ".":
                files[f"{rel_dir}/{DIR_MARKER}"] = Path(os.devnull)
        return files

    def publish(self) -> bool:
        """Steps 1-3 of the module's order; which objects nothing names is kept for :meth:`prune`."""
        started = time.monotonic()
        local = self._local()
        keys = {rel: self.url.key(rel) for rel in local}  # refuses a path leaving the prefix first
        remote = self.bucket.list(self.url.prefix + "/")
        stamp = {rel: file_sha256(path) for rel, path in local.items()}
        todo = [rel for rel in local if not self._same(keys[rel], remote, local[rel], stamp[rel])]
        ordered = sorted(todo, key=lambda rel: (rel == SPEC_FILE, rel.endswith("/" + CONFIG), rel))
        uploaded = {rel: self._upload(keys[rel], local[rel], stamp[rel]) for rel in ordered}
        self._mark_changed(uploaded, keys, local, stamp, remote)
        self._stale = sorted(set(remote) - set(keys.values()))
        if ordered:
            log.info(
                "published %d objects to %s in %.1f s", len(ordered), self.url.uri, time.monotonic() - started
            )
        return bool(ordered)

    def prune(self) -> bool:
        """Delete the objects the last publish left unnamed (versions no longer served)."""
        stale = [k for k in self._stale if k.startswith(self.url.prefix + "/")]
        if stale:
            self.bucket.delete(stale)
            log.info("deleted %d objects no longer served from %s", len(stale), self.url.uri)
        self._stale = []
        return bool(stale)

    def _mark_changed(
        self,
        uploaded: dict[str, float],
        keys: dict[str, str],
        local: dict[str, Path],
        stamp: dict[str, str],
        remote: dict[str, Stat],
    ) -> None:
        """Make every changed model folder's newest object newer than anything it held before.

        Triton decides that a model in S3 changed when the newest LastModified below its folder
        moved past the one it saw at its last load, and S3 keeps whole seconds: a config rewritten
        within the second of the previous publish would look unchanged, and a load would keep the
        old versions. The folder's config (or last object) is written again once the clock moved on.
        """
        for model in sorted({rel.split("/", 1)[0] for rel in uploaded if "/" in rel}):
            mine = [rel for rel in uploaded if rel.startswith(model + "/")]
            folder = self.url.key(model) + "/"
            before = max((s.modified for k, s in remote.items() if k.startswith(folder)), default=0.0)
            if before and max(uploaded[rel] for rel in mine) <= before:
                last = f"{model}/{CONFIG}" if f"{model}/{CONFIG}" in local else mine[-1]
                while self._upload(keys[last], local[last], stamp[last]) <= before:
                    time.sleep(0.25)

    def _same(self, key: str, remote: dict[str, Stat], path: Path, sha256: str) -> bool:
        if key not in remote or remote[key].size != path.stat().st_size:
            return False
        stat = self.bucket.stat(key)
        return stat is not None and stat.sha256 == sha256

    def _upload(self, key: str, path: Path, sha256: str) -> float:
        """Upload, read back and check; the object's LastModified."""
        size = path.stat().st_size
        self.bucket.put(key, path if size else b"", sha256)
        stat = self.bucket.stat(key)
        if stat is None or stat[:2] != (size, sha256) or self.bucket.stored_sha256(key) != sha256:
            raise IntegrityError(
                f"{key} in {self.url.uri} is not what was uploaded (size or SHA-256 differs); nothing that "
                "names it was published: run the sync again"
            )
        return stat.modified
