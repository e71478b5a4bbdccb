"""What the registry hands back is untrusted input: tags are validated before anything acts on them.

Anyone with write access to the tracking server can set a tag, and a tag ends up in a file path
(``file``), a checksum comparison (``sha256``), a Triton backend (``format``) or a config.pbtxt
(``input``/``output``, classes, mean/std). A value that does not look exactly like what this tool
writes at registration is refused with the tag named, before any download or file operation.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

from common.exit_codes import UsageError
from common.params_schema import ALL_PRECISIONS

FORMATS = ("onnx", "tensorrt_plan")
# A bare file name as the export stage writes it: no separators, no leading dot, nothing like "..".
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TENSOR = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


class Measured(NamedTuple):
    accuracy: float
    images: int


class TagError(UsageError):
    """A registry tag that this tool did not write or that was tampered with; names the tag (2)."""


def _where(name: str, version: int | None) -> str:
    return f"{name} v{version}" if version is not None else name


def artifact_file(tags: dict[str, str], name: str, version: int) -> str:
    """The ``file`` tag as a bare file name, safe to join onto a cache folder."""
    value = tags.get("file", "")
    if not _FILE.fullmatch(value) or len(value) > 128:
        raise TagError(f"{_where(name, version)}: tag file={value!r} is not a plain artifact file name")
    return value


def artifact_sha256(tags: dict[str, str], name: str, version: int) -> str:
    value = tags.get("sha256", "")
    if not _SHA256.fullmatch(value):
        raise TagError(f"{_where(name, version)}: tag sha256={value!r} is not a lowercase hex SHA-256")
    return value


def quality_sha256(tags: dict[str, str], name: str, version: int) -> str | None:
    """The SHA-256 of the version's quality reference; ``None`` for a version registered without one."""
    value = tags.get("quality_sha256")
    if value is None:
        return None
    if not _SHA256.fullmatch(value):
        raise TagError(f"{_where(name, version)}: tag quality_sha256={value!r} is not a hex SHA-256")
    return value


def artifact_format(tags: dict[str, str], name: str, version: int) -> str:
    value = tags.get("format", "onnx")
    if value not in FORMATS:
        raise TagError(f"{_where(name, version)}: tag format={value!r} is not one of {FORMATS}")
    return value


def precision(tags: dict[str, str], where: str) -> str:
    value = tags.get("precision", "")
    if value not in ALL_PRECISIONS:
        raise TagError(f"{where}: tag precision={value!r} is not one of {ALL_PRECISIONS}")
    return value


def tensor_name(tags: dict[str, str], key: str, default: str, name: str) -> str:
    value = tags.get(key, default)
    if not _TENSOR.fullmatch(value):
        raise TagError(f"{name}: tag {key}={value!r} is not a valid tensor name")
    return value


def json_list(tags: dict[str, str], key: str, name: str, item: type = str) -> tuple[Any, ...]:
    """A JSON list tag (``classes``: str, ``mean``/``std``: float); the spec checks the values."""
    try:
        value = json.loads(tags[key])
    except (KeyError, ValueError) as exc:
        raise TagError(f"{name}: tag {key} is missing or not JSON") from exc
    if not isinstance(value, list) or not value:
        raise TagError(f"{name}: tag {key}={tags[key]!r} is not a non-empty JSON list")
    wanted = (int, float) if item is float else item
    if not all(isinstance(v, wanted) and not isinstance(v, bool) for v in value):
        raise TagError(f"{name}: tag {key}={tags[key]!r} must list {item.__name__} values")
    return tuple(item(v) for v in value)


def accuracy(tags: dict[str, str]) -> Measured | None:
    """``(test_accuracy, test_images)`` measured at export, or ``None`` when unknown or malformed."""
    try:
        acc, images = float(tags["test_accuracy"]), int(tags["test_images"])
    except (KeyError, ValueError):
        return None
    if not (math.isfinite(acc) and 0.0 <= acc <= 1.0 and images > 0):
        return None
    return Measured(acc, images)


_DIGEST = re.compile(r"^[0-9a-f]{16}$")


def version_classes(tags: dict[str, str], model_tags: dict[str, str], name: str) -> tuple[str, ...]:
    """The classes a version answers in: its own ``classes`` tag, else (older versions) the model's."""
    return json_list(tags if "classes" in tags else model_tags, "classes", name)


def test_digest(tags: dict[str, str]) -> str | None:
    """The digest of the images and labels ``test_accuracy`` was measured on, if recorded."""
    value = tags.get("test_digest", "")
    return value if _DIGEST.fullmatch(value) else None


def class_precision(tags: dict[str, str]) -> dict[str, float]:
    """``test_class_precision`` (class -> share of its predictions that were right); {} if unknown."""
    try:
        value = json.loads(tags.get("test_class_precision", "{}"))
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    out = {}
    for k, v in value.items():
        if isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1:
            out[k] = float(v)
    return out
