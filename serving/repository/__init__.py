"""The model repository: its spec, every model's ``config.pbtxt``, and the atomic build on disk."""
