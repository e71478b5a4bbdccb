"""The registry tests' fixtures: the small export, registered in a private copy."""

from tests.registry.conftest import registry  # noqa: F401
