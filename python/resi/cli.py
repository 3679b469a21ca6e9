"""The ``resi`` console command (a thin front for the Rust CLI)."""

from __future__ import annotations

import signal
import sys

from . import _resi


def main() -> None:
    """Entry point of the ``resi`` command: ``resi --help`` for usage."""
    # Hand SIGINT back to the default disposition: the Rust gateway installs
    # its own SIGINT/SIGTERM handlers and shuts down cleanly on either. With
    # Python's handler left in place it would be chained and raise
    # KeyboardInterrupt once the command has already finished.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(_resi.run_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
