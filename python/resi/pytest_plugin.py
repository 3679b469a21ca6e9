"""pytest fixtures for integration suites that run resi (registered as the
``resi`` plugin through the ``pytest11`` entry point, so installing resi is
enough). Needs ``pytest-asyncio``, ``grpcio`` and ``cryptography``:
``pip install "resi[pytest]"``.

- ``esi_node``: an :class:`resi.testing.EsiNode` (echo methods in every RPC
  shape on raw bytes, ``Wait``, ``Fail`` and ``Modify``) on a free port.
- ``esi_facility``, ``esi_exchange``, ``esi_registry``: started
  :mod:`resi.sim` roles on free ports (the registry lists ``esi_exchange``).
- ``resi_pair``: an async factory ``await resi_pair(mode="strict", paths=2,
  upstream=None, **resi_keys)`` returning a :class:`resi.testing.Pair` — an
  end gateway in front of ``upstream`` (default ``esi_node``), a redundant
  in-process client, one :class:`resi.FaultRelay` per path
  (``pair.kill(i)``, ``pair.blackhole(i)``, ``pair.corrupt(i)``,
  ``pair.delay(i, latency, jitter)``, ``pair.bandwidth(i, bytes_per_sec)``,
  ``pair.flap(i, up, down, for_)``, ``pair.heal(i)``).
- ``resi_gateway``: an async factory ``await resi_gateway(**config)``
  returning a started :class:`resi.Gateway`.

Everything is stopped at teardown. Example::

    async def test_a_path_can_die(resi_pair):
        pair = await resi_pair(mode="permissive", paths=2)
        pair.kill(0)
        assert await pair.client.unary("/resi.test.Echo/Unary", b"hi") == b"hi"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Optional

import pytest

from . import Gateway
from .testing import EsiNode, GatewayFactory, Pair, PairFactory, start_pair

if TYPE_CHECKING:
    from .sim import Exchange, Facility, Registry

try:
    import pytest_asyncio

    _async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - the fixtures then explain themselves
    pytest_asyncio = None  # type: ignore[assignment]
    _async_fixture = pytest.fixture  # type: ignore[assignment]


def _need_asyncio() -> None:
    if pytest_asyncio is None:
        pytest.skip('resi fixtures need pytest-asyncio: pip install "resi[pytest]"')


def _sim() -> Any:
    try:
        from . import sim
    except ImportError as e:
        pytest.skip(f'the resi.sim fixtures need grpcio and cryptography: pip install "resi[pytest]" ({e})')
    return sim


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
async def esi_facility() -> AsyncIterator[Facility]:
    """A started :class:`resi.sim.Facility` (uid ``facility-1``, default
    limits, profile, price maps and offer policy) on a free 127.0.0.1 port:
    ``esi_facility.address``; its state (``offers``, ``prices``,
    ``registrations``, ``power_parameters``, ``calls``) can be inspected."""
    _need_asyncio()
    async with _sim().Facility() as fac:
        yield fac


@_async_fixture
async def esi_exchange() -> AsyncIterator[Exchange]:
    """A started :class:`resi.sim.Exchange` (uid ``exchange-1``, the
    registration form ``uici``/``cust-id``/``cust-surname``, registrations
    completed at once) on a free 127.0.0.1 port: ``esi_exchange.address``."""
    _need_asyncio()
    async with _sim().Exchange() as ex:
        yield ex


@_async_fixture
async def esi_registry(esi_exchange: Exchange) -> AsyncIterator[Registry]:
    """A started :class:`resi.sim.Registry` on a free 127.0.0.1 port that
    lists the ``esi_exchange`` fixture."""
    async with _sim().Registry(exchanges=[esi_exchange]) as reg:
        yield reg


@_async_fixture
async def resi_pair(request: pytest.FixtureRequest) -> AsyncIterator[PairFactory]:
    """Factory of gateway pairs (:class:`resi.testing.PairFactory`):
    ``await resi_pair(mode="strict", paths=2, upstream=None, **resi_keys)``
    gives a :class:`resi.testing.Pair` (end gateway, redundant client, a
    fault relay per path) in front of ``upstream`` (``"host:port"``, e.g.
    ``esi_facility.address``; default: the ``esi_node`` fixture)."""
    _need_asyncio()
    pairs: list[Pair] = []

    async def make(mode: str = "strict", paths: int = 2, *, upstream: Optional[str] = None, **resi_keys: Any) -> Pair:
        target = upstream if upstream is not None else request.getfixturevalue("esi_node").address
        pair = await start_pair(target, mode=mode, paths=paths, **resi_keys)
        pairs.append(pair)
        return pair

    try:
        yield make
    finally:
        for p in pairs:
            await p.close()


@_async_fixture
async def resi_gateway() -> AsyncIterator[GatewayFactory]:
    """Factory of started gateways (:class:`resi.testing.GatewayFactory`):
    ``await resi_gateway(**config)``, keyword arguments as :class:`resi.Gateway`."""
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
