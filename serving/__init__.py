"""Serving with Triton, in rooms by lifecycle: ``repository`` (what to serve, written atomically),
``rollout`` (moving a live server to it), ``server`` (the ``tritonserver`` process) and ``triton``
(code that runs inside Triton's python stub). Nothing here reads the registry or ``params.yaml``:
callers hand in a :class:`~serving.repository.spec.RepositorySpec`.
"""
