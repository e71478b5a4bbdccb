"""The ``tritonserver`` process: locating it, its environment, its supervisor, and the CLI."""
