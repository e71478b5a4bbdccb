"""One S3 bucket through boto3: the few calls a model repository needs, each failure one clear line.

Path-style addressing (MinIO, rclone and other S3-compatible servers need it; AWS accepts it), short
timeouts and few retries, so a stopped server fails a publish in seconds instead of minutes.
Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``AWS_SHARED_CREDENTIALS_FILE``...), never from an argument, and no message here
repeats one: a refused signature is named by its error code only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from common.exit_codes import Unavailable

T = TypeVar("T")

SHA_KEY = "sha256"  # object metadata (x-amz-meta-sha256): the content's SHA-256, written with it
CREDENTIAL_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken")


class ObjectStoreError(Unavailable):
    """S3 is unreachable, refused the credentials, or has no such bucket (exit code 3)."""


class Stat(NamedTuple):
    size: int
    sha256: str | None
    modified: float = 0.0  # LastModified, seconds since the epoch (S3 keeps whole seconds)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Bucket:
    """``bucket`` at ``endpoint`` (``http(s)://host:port``; ``None``: AWS)."""

    def __init__(self, endpoint: str | None, bucket: str, timeout_s: float = 10.0, attempts: int = 2):
        import boto3
        from botocore.config import Config

        self.endpoint, self.name = endpoint, bucket
        config = Config(
            s3={"addressing_style": "path"},
            connect_timeout=timeout_s,
            read_timeout=max(timeout_s, 60.0),
            retries={"max_attempts": attempts, "mode": "standard"},
        )
        self._s3 = boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=config)

    def _fail(self, exc: Exception, doing: str) -> ObjectStoreError:
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"S3 bucket {self.name!r} at {self.endpoint or 'AWS'}"
        if isinstance(exc, NoCredentialsError):
            return ObjectStoreError(
                f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            if code in CREDENTIAL_CODES or code == "403":
                return ObjectStoreError(
                    f"{where} refused the credentials ({code}) {doing}: check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY"
                )
            if code in ("NoSuchBucket", "404") and doing == "checking the bucket":
                return ObjectStoreError(f"{where} does not exist")
            return ObjectStoreError(f"{where} answered {code} {doing}")
        return ObjectStoreError(f"{where} is unreachable {doing}: {type(exc).__name__}")

    def _call(self, doing: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._s3, method)(Bucket=self.name, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(exc, doing) from None

    def check(self) -> None:
        """The endpoint answers, takes the credentials and has the bucket; otherwise one line says which."""
        self._call("checking the bucket", "head_bucket")

    def list(self, prefix: str) -> dict[str, Stat]:
        """Key -> size and LastModified of every object under ``prefix`` (which should end with ``/``)."""
        found: dict[str, Stat] = {}
        token: dict[str, str] = {}
        while True:
            page = self._call(f"listing {prefix}", "list_objects_v2", Prefix=prefix, **token)
            found |= {
                o["Key"]: Stat(int(o["Size"]), None, o["LastModified"].timestamp())
                for o in page.get("Contents", [])
            }
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def stat(self, key: str) -> Stat | None:
        head = self._read(key, lambda: self._s3.head_object(Bucket=self.name, Key=key))
        if head is None:
            return None
        meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
        return Stat(int(head["ContentLength"]), meta.get(SHA_KEY), head["LastModified"].timestamp())

    def get(self, key: str) -> bytes | None:
        return self._read(key, lambda: self._s3.get_object(Bucket=self.name, Key=key)["Body"].read())

    def _read(self, key: str, call: Callable[[], T]) -> T | None:
        """``call()``, or ``None`` when ``key`` does not exist; any other failure is one clear error."""
        from botocore.exceptions import ClientError

        try:
            return call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(exc, f"reading {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"reading {key}") from None

    def stored_sha256(self, key: str) -> str:
        """The SHA-256 of the bytes the server holds for ``key``, read back (not its metadata)."""
        digest = hashlib.sha256()
        try:
            body = self._s3.get_object(Bucket=self.name, Key=key)["Body"]
            for block in iter(lambda: body.read(1 << 20), b""):
                digest.update(block)
        except Exception as exc:
            raise self._fail(exc, f"reading {key} back") from None
        return digest.hexdigest()

    def put(self, key: str, source: Path | bytes, sha256: str) -> None:
        """Upload ``source`` (multipart when large) with its SHA-256 in the object's metadata."""
        from boto3.s3.transfer import TransferConfig

        extra = {"Metadata": {SHA_KEY: sha256}}
        try:
            if isinstance(source, bytes):
                self._s3.put_object(Bucket=self.name, Key=key, Body=source, **extra)
            else:
                config = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)
                self._s3.upload_file(str(source), self.name, key, ExtraArgs=extra, Config=config)
        except Exception as exc:
            raise self._fail(exc, f"writing {key}") from None

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            answer = self._call("deleting", "delete_objects", Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise ObjectStoreError(f"S3 refused to delete {first.get('Key')}: {first.get('Code')}")
