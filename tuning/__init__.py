"""Hyperparameter search: an Optuna study over a profile's settings, tracked as nested MLflow runs."""
