"""Fixtures the end-to-end tests share with other packages."""

from tests.monitoring.conftest import prometheus_bin  # noqa: F401 - fixture re-export
