"""Filesystem primitives for replacing a directory tree atomically and safely.

Used by :mod:`serving.repository.build`: a lock so two writers never interleave, tree comparison and
hard-linking so unchanged files are neither copied nor rewritten, and an atomic directory swap.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import filecmp
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from common.exit_codes import Busy


class RepositoryError(RuntimeError):
    """The repository could not be written (the previous one, if any, is left as it was)."""


class RepositoryBusy(RepositoryError, Busy):
    """Another build or rollout held the repository's lock past the wait allowed (exit code 9)."""


_HELD: dict[tuple[Path, int], int] = {}
_POLL_S = 0.05


def _take(fd: int, dest: Path, timeout_s: float | None) -> None:
    """``flock`` within ``timeout_s`` (``None``: wait as long as it takes)."""
    if timeout_s is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                waited = f" (waited {timeout_s:g} s)" if timeout_s else ""
                raise RepositoryBusy(
                    f"{dest} is being rewritten by another build or rollout{waited}"
                ) from None
            time.sleep(_POLL_S)


@contextlib.contextmanager
def repository_lock(dest: Path, blocking: bool = True, timeout_s: float | None = None) -> Iterator[None]:
    """Exclusive right to rewrite ``dest``: two interleaved swaps, or rollouts, would undo each other.

    It is an ``flock`` on the parent directory, so no lock file is left beside the repository, and
    it is re-entrant within a thread, so a rollout can hold it across the builds it makes.

    Args:
        blocking: wait for the lock; false is ``timeout_s=0``.
        timeout_s: wait at most this long (``None``: as long as it takes, when ``blocking``).

    Raises:
        RepositoryBusy: someone else held the lock past the wait allowed.
    """
    dest = Path(dest).absolute()
    key = (dest, threading.get_ident())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _take(fd, dest, timeout_s if blocking else 0.0)
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        if os.path.samefile(a, b):
            return True
    return filecmp.cmp(a, b, shallow=False)


def link_or_copy(src: Path, target: Path) -> None:
    """A hard link (instant, no extra disk) or a copy across filesystems; never a symlink."""
    try:
        os.link(src, target)
    except OSError:
        shutil.copy2(src, target)


def same_tree(new: Path, old: Path) -> bool:
    """Same relative paths, and every file byte-identical (hard links compare in O(1))."""
    for path, subdirs, names in os.walk(new):
        counterpart = old / os.path.relpath(path, new)
        if not counterpart.is_dir() or set(os.listdir(counterpart)) != set(subdirs) | set(names):
            return False
        for name in names:
            if not (counterpart / name).is_file() or not same_file(Path(path) / name, counterpart / name):
                return False
    return True


def swap_in(tmp: Path, dest: Path) -> None:
    """Make the tree at ``tmp`` appear at ``dest`` in one step; the old tree ends up at ``tmp``."""
    if not dest.exists():
        os.rename(tmp, dest)
    elif not exchange(tmp, dest):
        # Fallback: a few microseconds without ``dest``; still never a partial tree.
        aside = dest.with_name(f".{dest.name}.build-old-{os.getpid()}")
        os.rename(dest, aside)
        os.rename(tmp, dest)
        os.rename(aside, tmp)  # so the caller's cleanup removes the old tree


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux ``renameat2(RENAME_EXCHANGE)``; False if unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise RepositoryError(f"cannot swap {a} into {b}: {os.strerror(err)}")
