"""Sources of the Triton python models; copied into the repository, never imported by the project."""
