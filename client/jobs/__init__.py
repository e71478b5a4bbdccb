"""Jobs over many images: ``batch`` over a folder and ``offline-eval`` of the production version."""
