"""``python -m commands``: the ``cifar10`` command without its console script."""

from commands.main import main

main()
