"""Client for the CIFAR-10 Triton service: ``core`` (the library), ``jobs`` (batch, offline-eval),
``tools`` (bench). Installable without PyTorch (``pip install '.[client]'``): numpy, PIL and
``tritonclient``. Command: ``cifar10 client --help``.
"""
