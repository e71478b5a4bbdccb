"""Registering exported artifacts and moving aliases, on top of ``MlflowClient``.

Alias history lives in registered-model tags (``alias_history.<alias>``: a JSON stack of version
numbers), so ``rollback`` is defined any number of times and survives across machines that share
the tracking server. The alias itself is the truth about what serves; the history is its record.

Two kinds of failure are kept apart, because callers act on them differently: :class:`RegistryError`
(the request names something that does not exist: exit code 5) and :class:`RegistryUnavailable`
(the tracking server failed or could not be reached: exit code 3). Neither is ever turned into a
guess: :func:`resolve` falls back to the newest version only when a read-only caller asks for it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from common import exit_codes, tracking
from common.exit_codes import ExitError
from common.fsutil import sha256_file
from common.params import RegistryConfig
from registry import tags

log = logging.getLogger(__name__)
HISTORY_TAG = "alias_history.{alias}"


class RegistryError(ExitError):
    """A registry request that cannot be satisfied; the message says what is missing (exit code 5)."""

    exit_code = exit_codes.NOT_FOUND


class RegistryUnavailable(RegistryError):
    """The tracking server failed or is unreachable; nothing was decided from a partial answer (3)."""

    exit_code = exit_codes.UNAVAILABLE


class PromotionRefused(RegistryError):
    """The version exists but may not serve (no passed parity gate): exit code 1."""

    exit_code = exit_codes.FAILED


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _call(what: str, fn, *args, missing: str | None = None, **kwargs):
    """``fn(*args)``; MLflow's "does not exist" becomes ``RegistryError(missing)``, all else unavailable."""
    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        if missing is not None and exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(missing) from exc
        raise RegistryUnavailable(f"registry error while {what}: {_first_line(exc)}") from exc


@dataclass(frozen=True)
class Resolved:
    name: str
    version: int
    alias: str | None  # None when the alias was unset and the newest version was taken instead
    source: str
    tags: dict[str, str]


def client() -> MlflowClient:
    return MlflowClient(tracking.configure())


def register_manifest(manifest_path: Path, cfg: RegistryConfig) -> list[dict]:
    """Register every passed artifact of an export manifest as a model version (idempotent).

    A file whose checksum no longer matches the manifest is refused: it is not what was validated.
    Each version is tagged with the accuracy its own artifact scored at export, through its own
    runtime (``test_accuracy``, ``test_images``); a manifest without that figure leaves it unknown.
    Returns one row per artifact: name, version, and whether it was created or already present.
    """
    manifest = json.loads(manifest_path.read_text())
    folder, run_id = manifest_path.parent, manifest.get("mlflow_run_id")
    if not run_id:
        raise RegistryError(f"{manifest_path} names no MLflow run; re-run the export stage")
    c, rows = client(), []
    for art in manifest["artifacts"]:
        name = cfg.registered_name(art["precision"])
        if not art["passed"]:
            log.warning(
                "%s failed its parity gate (%s); not registered", art["file"], art["parity"]["failures"]
            )
            rows.append({"name": name, "version": None, "status": "rejected by parity gate"})
            continue
        path = folder / art["file"]
        if sha256_file(path) != art["sha256"]:
            raise RegistryError(f"{path} does not match the checksum its parity report validated; re-export")
        _ensure_model(c, name, manifest, art["precision"])
        existing = [
            v
            for v in _call("listing versions", c.search_model_versions, f"name='{name}'")
            if v.tags.get("sha256") == art["sha256"]
        ]
        if existing:
            rows.append({"name": name, "version": int(existing[0].version), "status": "already registered"})
            continue
        mv = _call(
            f"registering {name}",
            c.create_model_version,
            name,
            f"runs:/{run_id}/export/{art['precision']}",
            run_id=run_id,
            tags=version_tags(manifest, art, run_id),
        )
        rows.append({"name": name, "version": int(mv.version), "status": "created"})
    return rows


def version_tags(manifest: dict, art: dict, run_id: str) -> dict[str, str]:
    """The tags a registered version carries: provenance, parity, and its own measured accuracy."""
    parity = art["parity"]
    out = {
        "precision": art["precision"],
        "format": art["format"],
        "file": Path(art["file"]).name,
        "sha256": art["sha256"],
        "run_id": run_id,
        "git_commit": manifest["source"]["git_commit"],
        "source_sha256": manifest["source"]["sha256"],
        "source_weights": Path(manifest["source"].get("weights", "")).name,
        "parity_passed": "true",
        "parity_max_abs_logit": f"{parity['max_abs_logit']:.3e}",
        "parity_agreement": f"{parity['top1_agreement']:.4f}",
        "parity_accuracy": f"{parity['accuracy']:.4f}",
        "max_batch": str(manifest["io"]["max_batch"]),
        "export_command": manifest.get("command", ""),
    }
    measured = art.get("test")
    if measured:
        out |= {
            "test_accuracy": f"{measured['accuracy']:.4f}",
            "test_images": str(measured["images"]),
            "test_runtime": measured["runtime"],
        }
    return out


def _ensure_model(c: MlflowClient, name: str, manifest: dict, precision: str) -> None:
    try:
        c.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise RegistryUnavailable(f"registry error while reading {name}: {_first_line(exc)}") from exc
    _call(
        f"creating {name}",
        c.create_registered_model,
        name,
        tags={
            "classes": json.dumps(manifest["classes"]),
            "mean": json.dumps(manifest["mean"]),
            "std": json.dumps(manifest["std"]),
            "input": manifest["io"]["input"],
            "output": manifest["io"]["output"],
            "precision": precision,
        },
        description=f"WideResNet CIFAR-10 classifier, {precision}; versions come from the export stage",
    )


def registered_model(c: MlflowClient, name: str):
    return _call(
        f"reading {name}", c.get_registered_model, name, missing=f"no registered model named {name!r}"
    )


def _version(c: MlflowClient, name: str, version: int):
    return _call(
        f"reading {name} v{version}",
        c.get_model_version,
        name,
        str(version),
        missing=f"{name} has no version {version}",
    )


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


def _move_alias(c: MlflowClient, name: str, alias: str, version: int, history: list[int], previous) -> None:
    """Point the alias, then record it; if the record fails, the alias goes back (all or nothing)."""
    _call(f"setting {name}@{alias}", c.set_registered_model_alias, name, alias, str(version))
    try:
        _call(
            f"recording {name}@{alias} history",
            c.set_registered_model_tag,
            name,
            HISTORY_TAG.format(alias=alias),
            json.dumps(history),
        )
    except RegistryError:
        try:
            if previous is None:
                c.delete_registered_model_alias(name, alias)
            else:
                c.set_registered_model_alias(name, alias, str(previous))
        except MlflowException as undo:  # pragma: no cover - the server failed twice in a row
            log.error("could not restore %s@%s to %s: %s", name, alias, previous, _first_line(undo))
        raise


def promote(name: str, alias: str, version: int) -> dict:
    """Point ``alias`` at ``version`` and push it on the alias history."""
    c = client()
    mv = _version(c, name, version)
    if mv.tags.get("parity_passed") != "true":
        raise PromotionRefused(f"{name} v{version} has no passed parity gate; it cannot be promoted")
    rm = registered_model(c, name)
    history = _history(rm, alias)
    previous = history[-1] if history else None
    if previous != version:
        history.append(version)
    _move_alias(c, name, alias, version, history, (rm.aliases or {}).get(alias))
    return {"name": name, "alias": alias, "version": version, "previous": previous}


def rollback(name: str, alias: str = "production") -> dict:
    """Re-point ``alias`` at the version it named before the current one (repeatable)."""
    c = client()
    rm = registered_model(c, name)
    history = _history(rm, alias)
    if len(history) < 2:
        raise RegistryError(f"{name}@{alias} has no earlier version to roll back to (history: {history})")
    current = history.pop()
    _move_alias(c, name, alias, history[-1], history, (rm.aliases or {}).get(alias))
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
                f"(cifar10-registry promote --model {name} --alias {alias} --version N)"
            )
        else:
            versions = _call(f"listing {name}", c.search_model_versions, f"name='{name}'")
            if not versions:
                raise RegistryError(f"{name!r} has no version; run the register stage first")
            newest = max(int(v.version) for v in versions)
            log.warning("%s has no alias %r; falling back to the newest version, %s", name, alias, newest)
            mv = _version(c, name, newest)
            return Resolved(name, newest, None, mv.source, dict(mv.tags))
        mv = _version(c, name, version)
        return Resolved(name, version, alias, mv.source, dict(mv.tags))
    mv = _version(c, name, version)
    return Resolved(name, int(mv.version), None, mv.source, dict(mv.tags))


def alias_version(name: str, alias: str) -> int | None:
    """The version ``alias`` names, ``None`` when it is unset; registry failures raise."""
    value = (registered_model(client(), name).aliases or {}).get(alias)
    return int(value) if value is not None else None


def describe(name: str) -> dict:
    """Versions, aliases and alias history of one registered model, with each version's accuracy."""
    c = client()
    rm = registered_model(c, name)
    versions = sorted(
        _call(f"listing {name}", c.search_model_versions, f"name='{name}'"), key=lambda v: int(v.version)
    )
    by_version: dict[int, list[str]] = {}
    for alias, v in (rm.aliases or {}).items():
        by_version.setdefault(int(v), []).append(alias)
    rows = []
    for v in versions:
        measured = tags.accuracy(v.tags)
        rows.append(
            {
                "version": int(v.version),
                "aliases": by_version.get(int(v.version), []),
                "run_id": v.run_id,
                "precision": v.tags.get("precision"),
                "parity_agreement": v.tags.get("parity_agreement"),
                "test_accuracy": f"{measured[0]:.4f}" if measured else "unknown",
                "test_images": measured[1] if measured else None,
                "test_runtime": v.tags.get("test_runtime") if measured else None,
                "sha256": v.tags.get("sha256", "")[:12],
            }
        )
    return {
        "name": name,
        "aliases": {a: int(v) for a, v in (rm.aliases or {}).items()},
        "history": {
            k.split(".", 1)[1]: json.loads(v) for k, v in rm.tags.items() if k.startswith("alias_history.")
        },
        "versions": rows,
    }


def list_models(cfg: RegistryConfig) -> list[dict]:
    c = client()
    found = _call("listing models", c.search_registered_models, f"name LIKE '{cfg.model_prefix}-%'")
    return [describe(rm.name) for rm in found]
