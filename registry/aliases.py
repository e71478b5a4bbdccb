"""The aliases that decide what serves, and the old MLflow stage names that map onto them."""

from __future__ import annotations

ALIASES = ("production", "staging")
STAGE_TO_ALIAS = {"production": "production", "staging": "staging"}


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
