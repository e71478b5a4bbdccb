"""Operator scripts built on the library packages: the demo after ``dvc repro``, the soak run."""
