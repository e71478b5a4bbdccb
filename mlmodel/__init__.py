"""Registered versions as MLflow Models: what one contains, how it is written, read and loaded."""
