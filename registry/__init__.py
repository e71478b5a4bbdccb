"""MLflow Model Registry: versions of exported artifacts, aliases, promotion and rollback."""
