"""``python -m resi``: the same as the ``resi`` command."""

from .cli import main

main()
