"""The ``resi`` console command (a thin front for the Rust CLI)."""

from __future__ import annotations

import importlib
import signal
import sys

from . import _resi

#: Subcommands written in Python: name -> module whose ``main(argv)``
#: returns the exit status. Everything else goes to the Rust CLI (which
#: lists these in ``resi --help`` too).
PYTHON_COMMANDS = {
    "demo": "resi.demo",
}


def main() -> None:
    """Entry point of the ``resi`` command: ``resi --help`` for usage."""
    args = sys.argv[1:]
    if args and args[0] in PYTHON_COMMANDS:
        # Python commands keep Python's SIGINT handler (KeyboardInterrupt).
        sys.exit(importlib.import_module(PYTHON_COMMANDS[args[0]]).main(args[1:]))
    # Hand SIGINT back to the default disposition: the Rust gateway installs
    # its own SIGINT/SIGTERM handlers and shuts down cleanly on either. With
    # Python's handler left in place it would be chained and raise
    # KeyboardInterrupt once the command has already finished.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(_resi.run_cli(args))


if __name__ == "__main__":
    main()
