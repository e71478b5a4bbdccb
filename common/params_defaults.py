"""Where a missing setting's value comes from: the repository's own ``params.yaml``, and nowhere else.

The schema (:mod:`common.params_schema`) declares types and ranges only. A section built without a
key, or a ``--params`` file that leaves a section out, takes the value from this file, so a default
is written once and reviewed where the pipeline reads it. The project installs from its checkout
(``pip install -e``, as ``make install`` does), so the file sits one folder above this package.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "params.yaml"
SOURCE_ENV = "CIFAR10_SOURCE"  # data.source (CI points it at the offline mirror)
PROFILE_ENV = "CIFAR10_PROFILE"  # profile
ENV_PREFIX = "CIFAR10_"  # CIFAR10_<SECTION>__<KEY>[__<KEY>]=<yaml value>, e.g. CIFAR10_SERVING__KIND=KIND_GPU
ENV_SEPARATOR = "__"


@functools.cache
def _document() -> dict[str, Any]:
    if not DEFAULTS_FILE.is_file():
        raise FileNotFoundError(
            f"{DEFAULTS_FILE} is missing: the project's params.yaml holds every default "
            "(install from the repository checkout with `pip install -e .`)"
        )
    return yaml.safe_load(DEFAULTS_FILE.read_text()) or {}


def default_document() -> dict[str, Any]:
    """A deep copy of the defaults file, safe to change."""
    return copy.deepcopy(_document())


def defaults_at(path: str) -> dict[str, Any]:
    """The mapping at ``path`` (dots) in the defaults file.

    ``@`` is the first profile listed there: a profile (``profiles.<name>``, ``tune.profiles.<name>``)
    that leaves a key out takes it from the first one, so a new profile states only what differs.
    """
    node: Any = _document()
    for part in path.split("."):
        if part == "@" and isinstance(node, dict):
            part = next(iter(node), "")
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return {}
    return copy.deepcopy(node) if isinstance(node, dict) else {}


def env_overrides(env: dict[str, str] | None = None) -> list[tuple[str, Any, str]]:
    """``(dotted key, value, variable)`` for each ``CIFAR10_*`` variable that sets a parameter.

    The two named variables are taken as text; ``CIFAR10_<SECTION>__<KEY>`` values are read as YAML
    (``CIFAR10_SERVING__PREFERRED_BATCH_SIZES='[8, 32]'``), like ``--set`` and ``dvc exp run -S``.
    """
    env = dict(os.environ) if env is None else env
    found: list[tuple[str, Any, str]] = []
    if env.get(PROFILE_ENV):
        found.append(("profile", env[PROFILE_ENV], PROFILE_ENV))
    if env.get(SOURCE_ENV):
        found.append(("data.source", env[SOURCE_ENV], SOURCE_ENV))
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and ENV_SEPARATOR in name:
            parts = name[len(ENV_PREFIX) :].lower().split(ENV_SEPARATOR)
            found.append((".".join(parts), yaml.safe_load(value), name))
    return found
