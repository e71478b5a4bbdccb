"""Where each store lives: ``params.yaml``'s ``stores`` section, overridden by each tool's own variable.

One URI per store. The default is a file in the working directory, so a fresh clone needs no server;
a team points the same keys at PostgreSQL, an MLflow tracking server and S3 (``docs/stores.md``).

Precedence, highest first: a command's own option (``--tracking-uri``, ``--repository``,
``--storage``), the environment variable the store's tool already reads (:data:`ENV`), then
``params.yaml`` (which ``CIFAR10_STORES__<KEY>`` and ``--set stores.<key>=`` change like any setting).

Secrets never live here: a URI in ``params.yaml`` carrying a password is refused, and every URI is
:func:`redact`-ed before it is printed, logged or tagged, whichever source it came from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV = {
    "tracking": "MLFLOW_TRACKING_URI",
    "artifacts": "MLFLOW_ARTIFACTS_DESTINATION",
    "s3_endpoint": "MLFLOW_S3_ENDPOINT_URL",
    "model_repository": "CIFAR10_MODEL_REPOSITORY",
    "optuna": "OPTUNA_STORAGE",
    "dvc_remote": "CIFAR10_DVC_REMOTE",
}
SCHEMES = {
    "tracking": ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2", "http", "https"),
    "artifacts": ("", "file", "s3"),
    "s3_endpoint": ("http", "https"),
    "model_repository": ("", "s3"),
    "optuna": ("sqlite", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"),
    "dvc_remote": ("s3",),
}
OPTIONAL = ("s3_endpoint", "dvc_remote")  # "" means: none / AWS's own endpoint


class StoreError(ValueError):
    """A store URI that cannot be used as written (a usage error: exit code 2)."""


def redact(text: str) -> str:
    """``text`` with every ``user:password@`` in a URI it holds turned into ``user:***@``."""
    return re.sub(r"(?<=://)([^/@:\s]*):([^/@\s]*)@", r"\1:***@", text)


def _scheme(uri: str) -> str:
    match = re.match(r"^([a-z][a-z0-9+.-]*)://", uri)
    return match.group(1) if match else ""


def check_uri(key: str, uri: str) -> None:
    """Refuse a URI ``key`` cannot use, or one that carries a password (``params.yaml`` is not secret)."""
    if not uri:
        if key in OPTIONAL:
            return
        raise StoreError(f"stores.{key} is empty")
    scheme = _scheme(uri)
    if scheme not in SCHEMES[key]:
        kinds = ", ".join(f"{s}://" if s else "a path" for s in SCHEMES[key])
        raise StoreError(f"stores.{key}={redact(uri)!r}: use {kinds}")
    if scheme and urlsplit(uri).password is not None:
        raise StoreError(
            f"stores.{key} holds a password; keep it out of params.yaml: set it in the environment "
            f"({'PGPASSWORD or PGPASSFILE' if scheme.startswith('postgres') else ENV[key]})"
        )
    if key == "model_repository" and scheme == "s3":
        S3Url.parse(uri)


_S3_REPOSITORY = r"s3://(?:(https?)://)?([^/:@\s]+):(\d+)/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)"


@dataclass(frozen=True)
class S3Url:
    """A Triton S3 repository URI: ``s3://[http(s)://]host:port/bucket/prefix``.

    Triton takes its endpoint from the URI itself; without ``host:port`` it asks AWS, and against a
    plain-HTTP endpoint ``s3://https://...`` hangs without a word, so both are checked here.
    """

    tls: bool
    host: str
    port: int
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Url:
        match = re.fullmatch(_S3_REPOSITORY, uri)
        if match is None:
            raise StoreError(
                f"model repository {redact(uri)!r}: use s3://host:port/bucket/prefix "
                "(s3://https://host:port/bucket/prefix over TLS; AWS: s3://https://s3.<region>.amazonaws.com:443/"
                "bucket/prefix). Without host:port Triton waits for AWS and hangs"
            )
        scheme, host, port, bucket, prefix = match.groups()
        parts = prefix.strip("/").split("/")
        if any(p in ("", ".", "..") for p in parts) or not 0 < int(port) < 65536:
            raise StoreError(f"model repository {uri!r}: the prefix must be plain folder names")
        return cls(scheme == "https", host, int(port), bucket, "/".join(parts))

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"s3://{'https://' if self.tls else ''}{self.host}:{self.port}/{self.bucket}/{self.prefix}"

    def key(self, rel: str) -> str:
        """The object key of ``rel`` (a path inside the repository); one leaving the prefix is refused."""
        parts = rel.split("/")
        if not rel or rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{rel!r} is not a path inside the model repository")
        return f"{self.prefix}/{rel}"


def is_s3(location: str | Path) -> bool:
    return str(location).startswith("s3://")


@dataclass(frozen=True)
class Store:
    """One store's URI in force and where it came from (``params.yaml stores.<key>``, ``$VAR``, ...)."""

    key: str
    uri: str
    source: str

    @property
    def shown(self) -> str:
        return redact(self.uri)


def resolve(cfg: Any, key: str, option: str | None = None, root: str | Path | None = None) -> Store:
    """The URI of store ``key``: ``option`` (a command's flag), else ``$ENV[key]``, else ``cfg.<key>``.

    A relative ``sqlite:///`` path or folder is made absolute against ``root`` (default: the working
    directory), so a process that changes directory still writes the same file.
    """
    env = os.environ.get(ENV[key], "")
    if option:
        uri, source = option, "option"
    elif env:
        uri, source = env, f"${ENV[key]}"
    else:
        uri, source = getattr(cfg, key), f"params.yaml stores.{key}"
    if source != "params.yaml stores." + key:  # the environment and options were not validated yet
        try:
            check_uri(key, uri)
        except StoreError as exc:
            if "password" not in str(exc):  # a password there is the user's choice: it is redacted
                raise StoreError(f"{source}: {exc}") from None
    return Store(key, absolute(uri, root), source)


def absolute(uri: str, root: str | Path | None = None) -> str:
    """A relative sqlite path or folder made absolute against ``root``; any other URI as it is."""
    base = Path(root or Path.cwd()).resolve()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{base / uri.removeprefix('sqlite:///')}"
    if not uri or _scheme(uri):
        return uri
    return str(base / uri)


def without_secret(uri: str) -> str:
    """``uri`` with its password removed (for a tag or a file that must hold no secret)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
