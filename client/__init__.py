"""Client for the CIFAR-10 Triton service: batch inference, offline evaluation and benchmarks.

Installable without PyTorch (``pip install '.[client]'``): everything here is numpy, PIL and
``tritonclient``. Entry point: ``python -m client.cli --help``.
"""
