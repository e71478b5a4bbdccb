"""Code that runs inside Triton's python stub, never in the project's own processes (see README.md)."""
