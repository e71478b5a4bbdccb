"""The aliases that decide what serves: resolving, promoting and rolling back, with their history.

Alias history lives in registered-model tags (``alias_history.<alias>``: a JSON stack of version
numbers), so ``rollback`` is defined any number of times and survives across machines that share
the tracking server. The stack forgets what a rollback popped, so every move is also appended to
``alias_log.<alias>`` (version, UTC time, promote/rollback/clear; the newest :data:`LOG_KEEP`): that
is what ``cifar10 registry show`` turns into each version's periods under each alias. The alias
itself is the truth about what serves; both tags are its record, written with it or not at all.
Old MLflow stage names (``Production``/``Staging``) map onto the aliases.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry.store import (
    PromotionRefused,
    RegistryError,
    call_registry,
    client,
    first_line,
    model_version,
    registered_model,
)
from registry.views import AliasMoved, AliasRolledBack

log = logging.getLogger(__name__)
ALIASES = ("production", "staging")
STAGE_TO_ALIAS = {"production": "production", "staging": "staging"}
HISTORY_TAG = "alias_history.{alias}"
LOG_TAG = "alias_log.{alias}"
LOG_KEEP = 40  # entries of ~60 characters: well inside MLflow's 5,000-character tag values


@dataclass(frozen=True)
class Resolved:
    name: str
    version: int
    alias: str | None  # None when the alias was unset and the newest version was taken instead
    source: str
    tags: dict[str, str]


def alias_for(alias: str | None = None, stage: str | None = None) -> str:
    """Accept an alias, or an old MLflow stage name (``Production``/``Staging``) mapped onto one."""
    if stage is not None:
        key = stage.strip().lower()
        if key not in STAGE_TO_ALIAS:
            raise ValueError(f"stage {stage!r} has no alias; stages map as {dict(STAGE_TO_ALIAS)}")
        return STAGE_TO_ALIAS[key]
    if alias is None:
        raise ValueError("give --alias or --stage")
    if alias not in ALIASES:
        raise ValueError(f"unknown alias {alias!r}; use one of {', '.join(ALIASES)}")
    return alias


def _history(rm, alias: str) -> list[int]:
    try:
        history = json.loads(rm.tags.get(HISTORY_TAG.format(alias=alias), "[]"))
    except ValueError:
        history = None
    if not isinstance(history, list) or not all(isinstance(v, int) and v > 0 for v in history):
        raise RegistryError(f"{rm.name}: tag {HISTORY_TAG.format(alias=alias)} is not a list of versions")
    current = (rm.aliases or {}).get(alias)
    if current is not None and (not history or history[-1] != int(current)):
        history.append(int(current))  # the alias is the truth; a record that lags it is completed
    return history


def read_log(rm, alias: str) -> list[dict]:
    """``alias_log.<alias>``: ``[{"version", "at", "action"}]``, oldest first; [] if unset or unreadable.

    The log is a record for people; a malformed one is reported as empty rather than blocking a move.
    """
    try:
        log_ = json.loads(rm.tags.get(LOG_TAG.format(alias=alias), "[]"))
    except ValueError:
        return []
    return [e for e in log_ if isinstance(e, dict) and {"version", "at", "action"} <= e.keys()]


def _move_alias(
    c: MlflowClient, rm, alias: str, version: int | None, history: list[int], action: str
) -> None:
    """Point (or, for ``None``, unset) the alias, then record it; any failure puts everything back."""
    name, previous = rm.name, (rm.aliases or {}).get(alias)
    old_tags = {
        key: rm.tags.get(key) for key in (HISTORY_TAG.format(alias=alias), LOG_TAG.format(alias=alias))
    }
    entry = {"version": version, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "action": action}
    new_tags = {
        HISTORY_TAG.format(alias=alias): json.dumps(history),
        LOG_TAG.format(alias=alias): json.dumps([*read_log(rm, alias), entry][-LOG_KEEP:]),
    }
    if version is None:
        call_registry(f"unsetting {name}@{alias}", c.delete_registered_model_alias, name, alias)
    else:
        call_registry(f"setting {name}@{alias}", c.set_registered_model_alias, name, alias, str(version))
    written: list[str] = []
    try:
        for key, value in new_tags.items():
            call_registry(f"recording {name} {key}", c.set_registered_model_tag, name, key, value)
            written.append(key)
    except RegistryError:
        try:
            if previous is None:
                c.delete_registered_model_alias(name, alias)
            else:
                c.set_registered_model_alias(name, alias, str(previous))
            for key in written:
                if old_tags[key] is None:
                    c.delete_registered_model_tag(name, key)
                else:
                    c.set_registered_model_tag(name, key, old_tags[key])
        except MlflowException as undo:  # pragma: no cover - the server failed twice in a row
            log.error("could not restore %s@%s to %s: %s", name, alias, previous, first_line(undo))
        raise


def promote(name: str, alias: str, version: int) -> AliasMoved:
    """Point ``alias`` at ``version`` and push it on the alias history."""
    c = client()
    mv = model_version(c, name, version)
    if mv.tags.get("parity_passed") != "true":
        raise PromotionRefused(f"{name} v{version} has no passed parity gate; it cannot be promoted")
    rm = registered_model(c, name)
    history = _history(rm, alias)
    previous = history[-1] if history else None
    if previous != version:
        history.append(version)
    _move_alias(c, rm, alias, version, history, "promote")
    return {"name": name, "alias": alias, "version": version, "previous": previous}


def carry(name: str, old: int, new: int) -> list[str]:
    """Every alias ``old`` holds moves to ``new`` (the same bytes, re-registered): returns them.

    The alias history takes ``new`` in ``old``'s place, so a later rollback goes where it would have;
    the log records the move as ``migrate``.
    """
    c = client()
    rm = registered_model(c, name)
    moved = []
    for alias, version in sorted((rm.aliases or {}).items()):
        if int(version) != old:
            continue
        history = [new if v == old else v for v in _history(rm, alias)]
        _move_alias(c, rm, alias, new, history, f"migrate from v{old}")
        rm = registered_model(c, name)
        moved.append(alias)
    return moved


def clear(name: str, alias: str) -> None:
    """Unset ``alias`` (its history stays: the record of what it named)."""
    c = client()
    rm = registered_model(c, name)
    _move_alias(c, rm, alias, None, _history(rm, alias), "clear")


def rollback(name: str, alias: str = "production") -> AliasRolledBack:
    """Re-point ``alias`` at the version it named before the current one (repeatable)."""
    c = client()
    rm = registered_model(c, name)
    history = _history(rm, alias)
    if len(history) < 2:
        raise RegistryError(f"{name}@{alias} has no earlier version to roll back to (history: {history})")
    current = history.pop()
    _move_alias(c, rm, alias, history[-1], history, "rollback")
    return {"name": name, "alias": alias, "version": history[-1], "rolled_back_from": current}


def resolve(
    name: str, alias: str = "production", version: int | None = None, *, allow_newest: bool = False
) -> Resolved:
    """The version ``alias`` names, or ``version`` when given.

    Strict by default: a missing alias raises :class:`RegistryError`, so a command that changes what
    serves never acts on a guess. ``allow_newest`` is for read-only callers: a missing alias then
    yields the newest version with a warning (``Resolved.alias`` is ``None``). Registry failures
    always raise :class:`RegistryUnavailable`, whatever the caller allows.
    """
    c = client()
    if version is None:
        aliases = registered_model(c, name).aliases or {}
        if alias in aliases:
            version = int(aliases[alias])
        elif not allow_newest:
            raise RegistryError(
                f"{name} has no alias {alias!r}; choose a version first "
                f"(cifar10 registry promote --model {name} --alias {alias} --version N)"
            )
        else:
            versions = call_registry(f"listing {name}", c.search_model_versions, f"name='{name}'")
            if not versions:
                raise RegistryError(f"{name!r} has no version; run the register stage first")
            newest = max(int(v.version) for v in versions)
            log.warning("%s has no alias %r; falling back to the newest version, %s", name, alias, newest)
            mv = model_version(c, name, newest)
            return Resolved(name, newest, None, mv.source, dict(mv.tags))
        mv = model_version(c, name, version)
        return Resolved(name, version, alias, mv.source, dict(mv.tags))
    mv = model_version(c, name, version)
    return Resolved(name, int(mv.version), None, mv.source, dict(mv.tags))


def alias_version(name: str, alias: str) -> int | None:
    """The version ``alias`` names, ``None`` when it is unset; registry failures raise."""
    value = (registered_model(client(), name).aliases or {}).get(alias)
    return int(value) if value is not None else None
