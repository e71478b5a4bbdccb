"""The stores tests' helpers: reading a bucket as S3 clients would, a folder as bytes.

The servers themselves (PostgreSQL, ``rclone serve s3``, a team's MLflow) are fixtures of
``tests/conftest.py``, which the release tests share.
"""

from __future__ import annotations

from pathlib import Path

from scripts import local_stores


def objects(server: local_stores.S3, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket``, read from the server's folder (what S3 clients would get)."""
    root = server.root / bucket
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
