"""Python-based Triton backends, installed into a backend directory by :mod:`serving.server.embedded`."""
