"""What a served model says about its input, read from its ``config.pbtxt`` parameters.

A client that preprocesses images itself (tensor mode) must normalise exactly as the served model
was trained: the classes, mean and std come from what the server serves (written there by ``sync``
from the registry), never from the client's own defaults, so a change of ``params.yaml`` cannot
silently skew tensor-mode predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.core.errors import ModelNotReady
from client.core.transport import AsyncTriton


@dataclass(frozen=True)
class InputContract:
    classes: tuple[str, ...]
    mean: tuple[float, float, float] | None = None  # None for the ensemble: it takes encoded images
    std: tuple[float, float, float] | None = None


def parse_contract(model: str, config: dict, need_normalisation: bool) -> InputContract:
    """The contract in a model config as ``get_model_config`` returns it (either protocol)."""
    params = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    missing = [k for k in ("classes", *(("mean", "std") if need_normalisation else ())) if not params.get(k)]
    if missing:
        raise ModelNotReady(
            f"{model} does not declare {', '.join(missing)} in its config (a repository written before "
            "they were recorded): run `cifar10 registry sync` to rewrite it"
        )
    classes = tuple(c for c in params["classes"].split(",") if c)
    if not need_normalisation:
        return InputContract(classes)
    try:
        mean = tuple(float(v) for v in params["mean"].split(","))
        std = tuple(float(v) for v in params["std"].split(","))
    except ValueError as exc:
        raise ModelNotReady(f"{model}: mean/std parameters are not numbers: {exc}") from None
    if len(mean) != 3 or len(std) != 3:
        raise ModelNotReady(f"{model}: mean/std parameters need 3 values, got {mean} / {std}")
    return InputContract(classes, mean, std)  # type: ignore[arg-type]


async def read_contract(client: AsyncTriton, model: str, need_normalisation: bool) -> InputContract:
    return parse_contract(model, await client.model_config(model), need_normalisation)
