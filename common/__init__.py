"""Pieces every stage shares: typed configuration, atomic file writes and MLflow set-up."""
