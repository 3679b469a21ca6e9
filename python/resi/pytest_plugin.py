"""pytest fixtures for integration suites that run resi (registered as the
``resi`` plugin through the ``pytest11`` entry point, so installing resi is
enough). Needs ``pytest-asyncio`` and ``grpcio``: ``pip install "resi[pytest]"``.

- ``esi_node``: an :class:`resi.testing.EsiNode` (echo methods in every RPC
  shape on raw bytes, ``Wait``, ``Fail`` and ``Modify``) on a free port.
- ``resi_pair``: an async factory ``await resi_pair(mode="strict", paths=2,
  **resi_keys)`` returning a :class:`resi.testing.Pair` — an end gateway in
  front of ``esi_node``, a redundant in-process client, one
  :class:`resi.FaultRelay` per path (``pair.kill(i)``, ``pair.blackhole(i)``,
  ``pair.heal(i)``). Everything is stopped at teardown.
- ``resi_gateway``: an async factory ``await resi_gateway(**config)``
  returning a started :class:`resi.Gateway`, stopped at teardown.

Example::

    async def test_a_path_can_die(resi_pair):
        pair = await resi_pair(mode="permissive", paths=2)
        pair.kill(0)
        assert await pair.client.unary("/resi.test.Echo/Unary", b"hi") == b"hi"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from . import Gateway
from .testing import EsiNode, Pair, start_pair

try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - the fixtures then explain themselves
    pytest_asyncio = None
    _async_fixture = pytest.fixture


def _need_asyncio() -> None:
    if pytest_asyncio is None:
        pytest.skip('resi fixtures need pytest-asyncio: pip install "resi[pytest]"')


@pytest.fixture
def esi_node() -> Iterator[EsiNode]:
    """An ESI node (grpcio) on 127.0.0.1; see :class:`resi.testing.EsiNode`."""
    try:
        node = EsiNode()
    except ImportError:
        pytest.skip('the esi_node fixture needs grpcio: pip install "resi[pytest]"')
    node.start()
    try:
        yield node
    finally:
        node.stop()


@_async_fixture
async def resi_pair(esi_node: EsiNode) -> AsyncIterator[Callable[..., Awaitable[Pair]]]:
    """Factory of gateway pairs in front of ``esi_node``."""
    _need_asyncio()
    pairs: list[Pair] = []

    async def make(mode: str = "strict", paths: int = 2, **resi_keys: Any) -> Pair:
        pair = await start_pair(esi_node.address, mode=mode, paths=paths, **resi_keys)
        pairs.append(pair)
        return pair

    try:
        yield make
    finally:
        for p in pairs:
            await p.close()


@_async_fixture
async def resi_gateway() -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Factory of started gateways (keyword arguments as :class:`resi.Gateway`)."""
    _need_asyncio()
    gateways: list[Gateway] = []

    async def make(**config: Any) -> Gateway:
        gw = Gateway(**config)
        await gw.start()
        gateways.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in gateways:
            await gw.stop()
