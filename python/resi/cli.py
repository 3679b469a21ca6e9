"""The ``resi`` console command: the Rust CLI, plus the subcommands written
in Python (``resi sim``, ``resi demo``), which are dispatched here before
Rust sees them.
"""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Callable, Optional

from . import _resi

#: Subcommands implemented in Python: name -> ``"module:function"``; the
#: function takes the arguments after the name and returns the exit code.
#: Each also has an entry in the Rust CLI (``src/cli.rs``) so that ``resi
#: --help`` lists it.
PYTHON_COMMANDS = {
    "sim": "resi.sim.cli:main",
    "demo": "resi.demo:main",
    "conformance": "resi.conformance:main",
}


def python_command(argv: list[str]) -> Optional[tuple[Callable[[list[str]], int], list[str]]]:
    """The Python subcommand ``argv`` names, with its arguments (a leading
    ``--log-level LEVEL`` is handed on to it), or None for Rust's."""
    globals_: list[str] = []
    i = 0
    while i < len(argv) and argv[i].startswith("--log-level"):
        step = 1 if "=" in argv[i] else 2
        globals_ += argv[i : i + step]
        i += step
    if i >= len(argv) or argv[i] not in PYTHON_COMMANDS:
        return None
    module, _, func = PYTHON_COMMANDS[argv[i]].partition(":")
    handler = getattr(importlib.import_module(module), func)
    return handler, argv[i + 1 :] + globals_


def main() -> None:
    """Entry point of the ``resi`` command: ``resi --help`` for usage."""
    found = python_command(sys.argv[1:])
    if found is not None:
        handler, args = found
        sys.exit(handler(args))
    # Hand SIGINT back to the default disposition: the Rust gateway installs
    # its own SIGINT/SIGTERM handlers and shuts down cleanly on either. With
    # Python's handler left in place it would be chained and raise
    # KeyboardInterrupt once the command has already finished.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(_resi.run_cli(sys.argv[1:]))


if __name__ == "__main__":
    main()
