"""Serving optimisation: measure the served forms on this host and serve the fastest that keeps accuracy.

It sits on top of the other packages (it drives the registry, a real server and the client's load
generator); nothing imports it. Entry point: ``cifar10 optimize`` (:mod:`commands.optimize_group`).
"""
