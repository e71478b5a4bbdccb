"""``python -m client`` is ``python -m client.cli``."""

from client.cli import main

main()
