"""Several Triton replicas behind a load balancer: who they are, and taking one out of the balancer."""
