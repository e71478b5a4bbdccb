"""Prometheus rules, the Grafana dashboard and the tools that generate or measure them.

Run the tools from the repository root: ``python -m monitoring.reference_rules``,
``python -m monitoring.dashboard``, ``python -m benchmarks.class_counter``.
"""
