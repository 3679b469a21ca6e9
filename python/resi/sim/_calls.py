"""The simulator's client side: the typed clients of :mod:`resi.esi` over
a :class:`resi.Client` (plain gRPC to an address, or the redundant client
of a gateway pair), so a sim can talk to a peer directly or through
gateways.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeVar, Union

from .. import Client, esi

#: Where a peer is: ``"host:port"`` (or a ``dns:///host:port`` endpoint
#: URI), a connected :class:`resi.Client`, a typed :mod:`resi.esi` client,
#: or a started simulator role.
Target = Union[str, Client, Any]

C = TypeVar("C", esi.FacilityClient, esi.ExchangeClient, esi.RegistryClient)


def address_of(uri: str) -> str:
    """``host:port`` of an endpoint URI (``dns:///host:port`` or ``host:port``)."""
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri


@contextlib.asynccontextmanager
async def connected(target: Target) -> AsyncIterator[Client]:
    """A :class:`resi.Client` for ``target``; one made here is closed after."""
    if isinstance(target, Client):
        yield target
        return
    inner = getattr(target, "client", None)  # a typed resi.esi client
    if isinstance(inner, Client):
        yield inner
        return
    address = address_of(target) if isinstance(target, str) else str(target.address)
    client = await Client.connect(address)
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def typed(kind: type[C], target: Target) -> AsyncIterator[C]:
    """A ``kind`` client (e.g. :class:`resi.esi.FacilityClient`) for ``target``."""
    if isinstance(target, kind):
        yield target
        return
    async with connected(target) as client:
        yield kind(client)
