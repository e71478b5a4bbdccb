"""Typed ``registry`` section of ``params.yaml`` and the naming scheme of registered models.

One registered model per served form (``cifar10-wrn-fp32``, ``cifar10-wrn-int8``, ...): each maps
to exactly one Triton model, so a registry version number can be the Triton version folder and an
alias on that registered model says which folder serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from common.config import from_dict

ALIASES = ("production", "staging")
STAGE_TO_ALIAS = {"production": "production", "staging": "staging"}


@dataclass(frozen=True)
class RegistryConfig:
    model_prefix: str = "cifar10-wrn"
    serve: tuple[str, ...] = ("fp32",)
    ensemble_target: str = "fp32"

    def registered_name(self, precision: str) -> str:
        return f"{self.model_prefix}-{precision.replace('_', '-')}"

    def triton_name(self, precision: str) -> str:
        return f"wrn_{precision}"


def load_registry_config(path: str | Path = "params.yaml") -> RegistryConfig:
    return from_dict(RegistryConfig, (yaml.safe_load(Path(path).read_text()) or {}).get("registry"))


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
