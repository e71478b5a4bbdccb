"""Serving: the Triton model repository, an embedded ``tritonserver`` and zero-downtime rollouts."""
