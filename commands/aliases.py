"""The old ``cifar10-*`` scripts: thin aliases of ``cifar10 <group>`` that say so on stderr.

They forward their arguments unchanged (``cifar10-registry --params p.yaml list`` runs ``cifar10
registry --params p.yaml list``) and print one deprecation line first. They were deprecated in 0.2
and are removed in 0.3; ``docs/cli.md`` lists each with its replacement.
"""

from __future__ import annotations

import functools
import sys

from commands.main import main

REMOVED_IN = "0.3"
ALIASES = {
    "cifar10-prepare": ("data", "prepare"),
    "cifar10-train": ("train",),
    "cifar10-evaluate": ("evaluate",),
    "cifar10-export": ("export",),
    "cifar10-registry": ("registry",),
    "cifar10-serve": ("serve",),
    "cifar10-client": ("client",),
    "cifar10-optimize": ("optimize",),
    "cifar10-release": ("release",),
    "cifar10-tune": ("tune",),
}


def forward(old: str, argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    new = ALIASES[old]
    if old == "cifar10-serve" and args[:1] == ["serve"]:  # it was a group with one command, serve
        args = args[1:]
    print(
        f"note: {old} is deprecated and goes in {REMOVED_IN}; use: cifar10 {' '.join(new)}", file=sys.stderr
    )
    main([*new, *args])


# The console scripts' entry points (pyproject.toml), one per old script.
prepare = functools.partial(forward, "cifar10-prepare")
train = functools.partial(forward, "cifar10-train")
evaluate = functools.partial(forward, "cifar10-evaluate")
export = functools.partial(forward, "cifar10-export")
registry = functools.partial(forward, "cifar10-registry")
serve = functools.partial(forward, "cifar10-serve")
client = functools.partial(forward, "cifar10-client")
optimize = functools.partial(forward, "cifar10-optimize")
release = functools.partial(forward, "cifar10-release")
tune = functools.partial(forward, "cifar10-tune")
