"""The simulator's client side: ESI calls made with protobuf messages over
a :class:`resi.Client` (plain gRPC to an address, or a redundant client of
a gateway pair), so a sim can talk to a peer directly or through gateways.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, TypeVar, Union

from .. import Client

M = TypeVar("M")

#: Where a peer is: ``"host:port"`` (or a ``dns:///host:port`` endpoint
#: URI), a connected :class:`resi.Client`, or a started simulator role.
Target = Union[str, Client, Any]


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


def path(service: str, method: str) -> str:
    return f"/{service}/{method}"


async def unary(client: Client, service: str, method: str, request: Any, reply: type[M], timeout: float = 10) -> M:
    data = await client.unary(path(service, method), request.SerializeToString(), timeout=timeout)
    return reply.FromString(data)  # type: ignore[attr-defined, no-any-return]


async def server_stream(client: Client, service: str, method: str, request: Any, reply: type[M], timeout: float = 30) -> list[M]:
    return [reply.FromString(m) async for m in client.server_stream(path(service, method), request.SerializeToString(), timeout=timeout)]  # type: ignore[attr-defined]


async def client_stream(client: Client, service: str, method: str, requests: Iterable[Any], reply: type[M], timeout: float = 10) -> M:
    data = await client.client_stream(path(service, method), [r.SerializeToString() for r in requests], timeout=timeout)
    return reply.FromString(data)  # type: ignore[attr-defined, no-any-return]


async def bidi(client: Client, service: str, method: str, requests: AsyncIterable[Any], reply: type[M], timeout: float = 30) -> AsyncIterator[M]:
    async def encoded() -> AsyncIterator[bytes]:
        async for r in requests:
            yield r.SerializeToString()

    async for m in client.bidi(path(service, method), encoded(), timeout=timeout):
        yield reply.FromString(m)  # type: ignore[attr-defined]
