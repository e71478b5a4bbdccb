"""Prometheus rules, the Grafana dashboard, drift (PSI) and the tools that generate them.

Run the tools from the repository root: ``python -m monitoring.reference_rules``,
``python -m monitoring.dashboard``, ``python -m monitoring.drift_cli``.
"""
