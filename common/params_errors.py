"""pydantic's validation errors as lines a user can act on: the key's full path and the bad value.

``serving.max_queue_delay_us: expected int >= 0, got "2ms"``: the path is where the key lives in
``params.yaml`` (a profile's ``train`` section is ``profiles.<name>.train``), the expectation is the
field's type and range, and the value is shown as JSON so a quoted number reads as text.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from common.exit_codes import UsageError


class ParamsError(UsageError):
    """``params.yaml``, a ``--set`` or a ``CIFAR10_*`` variable is malformed: bad usage (code 2)."""

    problems: list[tuple[tuple[Any, ...], str]] = []  # noqa: RUF012 - set per instance


TYPE_WORDS = {
    "int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "number",
    "float_parsing": "number", "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "text", "tuple_type": "a list", "list_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "none_required": "null",
}  # fmt: skip
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _field(model: type[BaseModel], loc: tuple[Any, ...]) -> Any:
    """The FieldInfo that ``loc`` ends in (``None`` past a list index or an unknown key)."""
    info = None
    for part in loc:
        if not isinstance(part, str) or model is None:
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        inner = [a for a in typing.get_args(info.annotation) if isinstance(a, type)] or [info.annotation]
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return info


def expected_text(info: Any) -> str:
    if info is None:
        return ""
    annotation, metadata = info.annotation, list(info.metadata)
    nullable = " or null" if type(None) in typing.get_args(annotation) else ""
    if nullable:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata += [m for x in more for m in (getattr(x, "metadata", None) or [x])]
    word = {int: "int", float: "number", bool: "true or false", str: "text"}.get(annotation, "")
    bounds = [f"{BOUNDS[b]} {getattr(m, b)}" for m in metadata for b in BOUNDS if hasattr(m, b)]
    if typing.get_origin(annotation) is typing.Literal:
        word = "one of " + ", ".join(map(str, typing.get_args(annotation)))
    return " ".join(x for x in (word, " and ".join(bounds)) if x) + nullable


def _path(loc: tuple[Any, ...], where: dict[str, str]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith(("function-", "constrained-")))]
    for n in range(len(parts), -1, -1):
        head = ".".join(parts[:n])
        if head in where:
            parts = [where[head], *parts[n:]]
            break
    return ".".join(f"[{p}]" if p.isdigit() else p for p in parts).replace(".[", "[")


def _value(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def problems(exc: ValidationError, model: type[BaseModel]) -> list[tuple[tuple[Any, ...], str]]:
    """``(loc, what is wrong)`` per error, ``loc`` relative to ``model``.

    A section built inside another one (``Params`` holds ``TrainConfig``) raises :class:`ParamsError`
    from its own ``__init__``; pydantic wraps that as a value error, which is unwrapped here so the
    key's path stays whole.
    """
    found: list[tuple[tuple[Any, ...], str]] = []
    errors = exc.errors()
    deeper = {tuple(e["loc"][:n]) for e in errors for n in range(len(e["loc"]))}
    for error in errors:
        loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
        got = _value(error["input"])
        if isinstance(ctx.get("error"), ParamsError):
            found += [(loc + inner, text) for inner, text in ctx["error"].problems]
        elif kind == "too_short" and loc in deeper:
            continue  # a list whose items failed: the items' lines say why
        elif loc and loc[-1] == "[key]":
            expected = ctx.get("expected") or TYPE_WORDS.get(kind, "a valid key")
            found.append((loc[:-2], f"unknown key {got} (expected {expected})"))
        elif kind == "extra_forbidden":
            found.append((loc, "unknown key"))
        elif kind == "missing":
            found.append((loc, "missing"))
        elif kind in ("value_error", "assertion_error"):
            found.append((loc, error["msg"].removeprefix("Value error, ")))
        elif kind == "literal_error":
            found.append((loc, f"expected one of {ctx.get('expected')}, got {got}"))
        elif kind == "too_short":
            found.append((loc, f"need values (at least {ctx.get('min_length')}), got {got}"))
        else:
            expected = expected_text(_field(model, loc)) if not any(isinstance(p, int) for p in loc) else ""
            if not expected:
                bound = [f"{BOUNDS[b]} {ctx[b]}" for b in BOUNDS if b in ctx]
                word = TYPE_WORDS.get(kind) or (
                    "int" if all(isinstance(ctx[b], int) for b in ctx) else "number"
                )
                expected = " ".join([word, *bound]) if bound or kind in TYPE_WORDS else error["msg"].lower()
            found.append((loc, f"expected {expected}, got {got}"))
    return found


def describe_errors(exc: ValidationError, model: type[BaseModel], where: dict[str, str]) -> list[str]:
    """One line per error; ``where`` maps a model path (``train``) to its place in the file."""
    return [f"{_path(loc, where) or 'params'}: {text}" for loc, text in problems(exc, model)]


def raise_params_error(exc: ValidationError, model: type[BaseModel], where: dict[str, str]) -> None:
    error = ParamsError("; ".join(describe_errors(exc, model, where)))
    error.problems = problems(exc, model)
    raise error from None
