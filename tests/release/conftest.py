"""The release tests reuse the monitoring tests' Prometheus binary fixture."""

from tests.monitoring.conftest import prometheus_bin  # noqa: F401 - fixture re-export
