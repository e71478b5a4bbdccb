"""A digest of each model folder, stamped into its config.pbtxt, so a server can say what it loaded.

What a repository holds and what a server has loaded from it can differ: a rollout killed after
writing the repository but before loading (or a replica of a fleet not yet reached) serves the old
configs from a new repository. The repository alone cannot tell, so each config carries
``parameters { key: "generation" }``: a digest of everything else in its model folder. Triton returns
the loaded config, parameters included (``get_model_config``), so a rollout compares each model's
loaded generation with the repository's and loads exactly the models that differ, on each server.

Artifacts count by their path and size, not content: a version folder is a registry version, whose
file never changes, and hashing hundreds of MB per rollout buys nothing. Every other file (python
models, labels, quality references, the config's own text) counts by content.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from serving.repository.model_configs import to_text

KEY = "generation"
CONTENT_LIMIT = 1 << 20  # files up to this size count by content; larger ones (artifacts) by size


def _identity(content: bytes | Path) -> bytes:
    if isinstance(content, bytes):
        return content
    try:
        size = content.stat().st_size
        return content.read_bytes() if size <= CONTENT_LIMIT else f"size:{size}".encode()
    except OSError:
        return f"missing:{content.name}".encode()


def stamp(configs: dict[str, mc.ModelConfig], files: dict[str, bytes | Path]) -> dict[str, str]:
    """Set each config's generation from its folder's other files; returns model -> generation.

    ``files`` maps repository-relative paths to content (as :func:`repository_layout` builds them);
    each stamped config's text is written into it as ``<model>/config.pbtxt``.
    """
    generations = {}
    for model, config in configs.items():
        config.parameters.pop(KEY, None)
        digest = hashlib.sha256(to_text(config).encode())
        for rel in sorted(r for r in files if r.startswith(f"{model}/") and r != f"{model}/config.pbtxt"):
            digest.update(rel.encode() + b"\0" + _identity(files[rel]) + b"\0")
        generations[model] = digest.hexdigest()[:20]
        config.parameters[KEY].string_value = generations[model]
        files[f"{model}/config.pbtxt"] = to_text(config).encode()
    return generations


def loaded_generation(config: dict) -> str | None:
    """The generation in a config as Triton returns it (``get_model_config(..., as_json=True)``)."""
    return config.get("parameters", {}).get(KEY, {}).get("string_value")
