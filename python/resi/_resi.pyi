"""Type stubs for the compiled extension module ``resi._resi``."""

__version__: str

def run_cli(args: list[str]) -> int:
    """Run the ``resi`` command with ``args`` (without the program name) and
    return its exit code. The GIL is released while it runs."""
    ...
