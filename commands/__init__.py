"""The ``cifar10`` command: one entry point whose groups match the rooms of the project."""
