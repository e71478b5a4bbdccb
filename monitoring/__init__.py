"""Prometheus rules, the Grafana dashboard, drift (PSI) and the tools that generate them.

Run the tools from the repository root: ``cifar10 monitor reference-rules``,
``cifar10 monitor dashboard``, ``cifar10 monitor drift``.
"""
