"""The python-based ``onnxruntime`` backend (``model.py`` runs inside Triton's python stub)."""
