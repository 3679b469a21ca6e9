"""resi — the Redundant Energy Services Interface.

ESI gateways that carry every call over several transports at once and
remove the duplicates. Run a gateway with the ``resi`` command::

    resi gateway --config gateway.toml

The asyncio API (start and stop gateways, make ESI calls, register
``Modify`` extension handlers, read statistics) is being written.
"""

from ._resi import __version__, run_cli

__all__ = ["__version__", "run_cli"]
