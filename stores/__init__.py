"""Stores a team shares: what each ``stores`` URI resolves to, whether it answers, and the servers
and remotes in front of them (an MLflow tracking server, the DVC remote). Builds on :mod:`common`
only; ``docs/stores.md`` is the guide."""
