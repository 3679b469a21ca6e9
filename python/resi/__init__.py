"""resi — the Redundant Energy Services Interface, from asyncio.

ESI gateways that carry every call over several transports at once and
remove the duplicates, with a thin asyncio API over the Rust core::

    import resi

    async with resi.Gateway(listen="127.0.0.1:0", address="127.0.0.1:50051") as end:
        async with await resi.Client.connect_redundant([end.address, end.address]) as client:
            reply = await client.unary("/pkg.Service/Method", b"request", timeout=5)
            print(await client.stats())

- :class:`Gateway` — a gateway in this process, configured from a TOML
  file, a dict or keyword arguments (the same keys and checks as the file).
- :class:`Client` — ESI calls of every shape on raw bytes, either over
  plain gRPC to a gateway (``Client.connect``) or straight to an end
  gateway over several redundant paths (``Client.connect_redundant``: this
  process is then the client gateway).
- Extension handlers: ``gateway.register(ext_id, handler)`` with
  ``async def handler(data: bytes) -> bytes``.
- Statistics and events: ``stats()`` and ``events()`` of a client or
  gateway (:class:`SessionStats`, :class:`PathStats`, :class:`Event`).
- Errors (:mod:`resi.errors`): :class:`ResiError` and its subclasses
  :class:`ConfigError` (``.origin``, ``.key``), :class:`CallError`
  (``.code``, ``.details``, ``.trailers``), :class:`SessionError` (and
  :class:`NotEndGatewayError`) and :class:`BindError` (an ``OSError``).
- Rust logs go to the ``resi`` logger of :mod:`logging` (from a
  background thread; :func:`flush_logging` waits for them).
- :mod:`resi.nkn` — NKN directly: identities, ``NknClient`` (an asyncio
  MultiClient) and ``LocalNode`` (the embedded NKN node for offline tests).
- :mod:`resi.esi` — typed ESI (SolarNetwork dialect): the message classes
  and ``FacilityClient``/``ExchangeClient``/``RegistryClient`` over a Client.
- :mod:`resi.aio` — ``Channel``: a ``grpc.aio`` channel over a Client, for
  grpcio-generated stubs (needs grpcio).

Run a gateway as a process with the ``resi`` command
(``resi gateway --config gateway.toml``); pytest fixtures come with the
``resi.pytest_plugin`` plugin, registered automatically.
"""

from __future__ import annotations

import asyncio
import atexit
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from . import _resi
from ._resi import (
    Event,
    EventStream,
    FaultRelay,
    PathStats,
    SessionStats,
    __version__,
    run_cli,
)
from .errors import BindError, CallError, ConfigError, NotEndGatewayError, ResiError, SessionError, StatusCode

if TYPE_CHECKING:
    import resi.aio

__all__ = [
    "BindError",
    "CallError",
    "Client",
    "ConfigError",
    "Event",
    "EventStream",
    "FaultRelay",
    "Gateway",
    "Handler",
    "Metadata",
    "NotEndGatewayError",
    "PathStats",
    "ResiError",
    "SessionError",
    "SessionStats",
    "StatusCode",
    "__version__",
    "flush_logging",
    "refresh_logging",
    "run_cli",
]

#: Request metadata: ``(key, value)`` pairs; ``bytes`` values for ``-bin`` keys.
Metadata = Sequence[tuple[str, Union[str, bytes]]]
#: An extension handler: ``data`` of the request's extension in, answer out.
Handler = Callable[[bytes], Union[Awaitable[bytes], bytes]]
Messages = Union[Iterable[bytes], AsyncIterable[bytes]]

# Which section a flat keyword belongs to (keys compared without case, `_`
# and `-`, as in the file). `nkn_*` keywords go to [Nkn], `reverse_*` to
# [Reverse], `tls_*` to [Tls] (`tls_client_ca` is `ClientCa`), `metrics_*`
# to [Metrics] (`metrics_listen`); anything
# unknown goes to [Resi], where it is reported with a "did you mean" hint.
_TCP_KEYS = {"listen", "address"}
_PREFIXES = {"nkn": "Nkn", "reverse": "Reverse", "tls": "Tls", "metrics": "Metrics"}
_SECTIONS = {"tcp": "Tcp", "nkn": "Nkn", "resi": "Resi", "reverse": "Reverse", "tls": "Tls", "metrics": "Metrics"}


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _config_from_kwargs(kwargs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for key, value in kwargs.items():
        n = _norm(key)
        prefix = next((p for p in _PREFIXES if n.startswith(p) and len(n) > len(p)), None)
        if n in _SECTIONS and isinstance(value, Mapping):
            tables.setdefault(_SECTIONS[n], {}).update(value)
        elif n in _TCP_KEYS:
            tables.setdefault("Tcp", {})[key] = value
        elif prefix is not None:
            tables.setdefault(_PREFIXES[prefix], {})[key[len(prefix) :].lstrip("_-")] = value
        else:
            tables.setdefault("Resi", {})[key] = value
    return tables


def _client_tls(
    ca: str | os.PathLike[str] | None,
    cert: str | os.PathLike[str] | None,
    key: str | os.PathLike[str] | None,
    server_name: str | None,
) -> dict[str, Any] | None:
    """A client's TLS keywords as a ``[Tls]`` table (None: no TLS)."""
    table = {"UpstreamCa": ca, "Cert": cert, "Key": key, "ServerName": server_name}
    table = {k: v for k, v in table.items() if v is not None}
    return table or None


def flush_logging() -> bool:
    """Waits until every Rust log record logged so far has reached Python's
    ``logging`` (a background thread hands them over, in order); returns
    False if that took more than 5 s. The GIL is released while waiting."""
    return _resi.flush_logs()


# Records still queued at exit reach Python's logging before it shuts down.
atexit.register(_resi.flush_logs)


def refresh_logging() -> None:
    """Call after changing the level of a ``resi`` logger: Rust log records
    check levels against a cache."""
    _resi.reset_log_cache()


class Gateway:
    """A resi gateway running in this process, on the module's tokio runtime.

    Build it from keyword arguments (``listen``/``address`` go to ``[Tcp]``,
    ``nkn_address``/``nkn_seed``/``nkn_allowed_peers``/... to ``[Nkn]``,
    ``reverse_listen``/``reverse_address`` to ``[Reverse]``,
    ``tls_cert``/``tls_key``/``tls_client_ca``/``tls_upstream_ca``/
    ``tls_server_name``/``tls_plain_listen`` to ``[Tls]``, ``metrics_listen``
    to ``[Metrics]``, the rest to ``[Resi]``;
    ``heartbeat_interval=`` is ``HeartbeatInterval``), from a
    dict of tables (:meth:`from_dict`) or from a TOML file
    (:meth:`from_file`). All three validate exactly like ``resi gateway``
    and raise :class:`ConfigError` naming the origin, key and problem.
    Durations take ``"250ms"``-style strings, seconds, or ``timedelta``.

    Use it as ``async with Gateway(...) as gw:`` or call :meth:`start` and
    :meth:`stop`. Port 0 picks a free port; :attr:`addresses` tells which.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise TypeError("give either a config dict or keyword arguments, not both")
        if config is not None:
            self._gw = _resi.Gateway(dict(config), "<dict>")
        else:
            self._gw = _resi.Gateway(_config_from_kwargs(kwargs), "<keyword arguments>")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], origin: str = "<dict>") -> Gateway:
        """A gateway from tables as in the file (``{"Tcp": {...}, "Resi": {...}}``)."""
        gw = cls.__new__(cls)
        gw._gw = _resi.Gateway(dict(config), origin)
        return gw

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Gateway:
        """A gateway from a TOML configuration file (the original format works)."""
        gw = cls.__new__(cls)
        gw._gw = _resi.Gateway.from_file(os.fspath(path))
        return gw

    async def start(self) -> Gateway:
        """Binds every listen address and starts serving; returns at once
        (the upstream is found in the background). Raises
        :class:`BindError` (an ``OSError``) for an address it cannot bind."""
        self._gw.start()
        return self

    async def stop(self) -> None:
        """Stops gracefully: returns as soon as no call is in flight;
        calls still running get at most ``[Resi] ShutdownGrace``; sessions
        close, and no task of the gateway is left running."""
        await self._gw.stop()

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._gw.running

    @property
    def addresses(self) -> list[str]:
        """Bound listen addresses (``"ip:port"``); empty when stopped."""
        return self._gw.addresses

    @property
    def reverse_addresses(self) -> list[str]:
        """Bound ``[Reverse] Listen`` addresses (``"ip:port"``): ESI clients
        there call the far side of the session, back over the reverse
        channel. Empty when stopped or not configured."""
        return self._gw.reverse_addresses

    @property
    def reverse_channels(self) -> int:
        """Live reverse channels client gateways opened to this gateway."""
        return self._gw.reverse_channels

    @property
    def address(self) -> str:
        """The first bound listen address."""
        addrs = self._gw.addresses
        if not addrs:
            raise SessionError("the gateway is not running")
        return addrs[0]

    @property
    def name(self) -> str:
        """``[Resi] Name``: in log records, metrics and hop info."""
        return self._gw.name

    @property
    def metrics_address(self) -> str | None:
        """Where ``GET /metrics`` is served (``"ip:port"``, ``[Metrics]
        Listen`` with the real port); None when stopped or not configured."""
        return self._gw.metrics_address

    @property
    def upstream_kind(self) -> str | None:
        """``"plain"`` (an ESI server), ``"resi"`` (a gateway) or None while
        not connected."""
        return self._gw.upstream_kind

    def register(self, ext_id: int, handler: Handler) -> None:
        """Answers ``Modify`` for ``ext_id`` here with ``handler(data)``.

        An ``async def`` handler runs on the event loop running when it was
        registered. Its bytes become the answer's ``data``; raising
        :class:`CallError` answers with that status; any other exception
        answers ``UNKNOWN`` naming it (the gateway carries on).
        """
        self._gw.register(ext_id, handler)

    def unregister(self, ext_id: int) -> bool:
        """Removes a handler; calls for ``ext_id`` then follow the ``pass`` rules."""
        return self._gw.unregister(ext_id)

    def extension(self, ext_id: int) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def deco(handler: Handler) -> Handler:
            self.register(ext_id, handler)
            return handler

        return deco

    async def upstream_stats(self) -> SessionStats | None:
        """Statistics of the session to a resi upstream (None otherwise)."""
        return await self._gw.upstream_stats()

    async def session_stats(self) -> list[SessionStats]:
        """Statistics of every session client gateways opened to this one."""
        return await self._gw.session_stats()

    def events(self) -> EventStream:
        """Events of the upstream session and every accepted session, from
        now on; the stream ends once the gateway stopped."""
        return self._gw.events()

    def __repr__(self) -> str:
        return repr(self._gw)


class Client:
    """ESI calls from asyncio, on raw bytes, in all four RPC shapes.

    Make one with :meth:`connect` (plain gRPC to a gateway or any ESI
    server) or :meth:`connect_redundant` (a redundant session straight to an
    end gateway, one TCP path per address: this process is the client
    gateway, and a hop for ``Modify``). Failed calls raise
    :class:`CallError`; ``timeout`` (seconds) is sent as ``grpc-timeout``
    and enforced locally; cancelling the awaiting task cancels the call at
    the server.
    """

    def __init__(self, inner: _resi.Client) -> None:
        self._c = inner

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        connect_timeout: float = 5.0,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
    ) -> Client:
        """Connects over plain gRPC (h2c) to ``target`` (``"host:port"``), or
        over TLS 1.3 when ``tls_ca`` (PEM file of the CA the server's
        certificate must chain to) is given: ``tls_cert``/``tls_key`` are
        the client certificate for mutual TLS, ``tls_server_name`` the name
        checked in the server's certificate (default: the host of
        ``target``). Raises :class:`ConfigError` for a missing or bad file,
        :class:`SessionError` if it cannot connect (a refused certificate
        included)."""
        tls = _client_tls(tls_ca, tls_cert, tls_key, tls_server_name)
        client = cls(_resi.Client.plain(target, connect_timeout, tls))
        await client._ready()
        return client

    @classmethod
    async def connect_redundant(
        cls,
        paths: Sequence[str],
        *,
        mode: str = "strict",
        reverse_address: str | Sequence[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        allow_plain: bool = False,
        **resi: Any,
    ) -> Client:
        """Opens a redundant session to the end gateway reachable at each of
        ``paths`` (one TCP path each; each over TLS with the ``tls_*``
        keywords, as in :meth:`connect`). ``mode`` and the other keywords are
        ``[Resi]`` keys (``heartbeat_interval``, ``dead_timeout``,
        ``connect_timeout``, ...), validated as in a file. With
        ``reverse_address`` (``"host:port"`` of a local ESI server, or a
        list: the first that connects), this client also opens the reverse
        channel, like a gateway with ``[Reverse] Address``: calls made at
        the end gateway's ``[Reverse] Listen`` are served by that server.
        Raises :class:`SessionError` if no path could join, and
        :class:`NotEndGatewayError` (a :class:`SessionError`) if the peer is
        not a resi end gateway (a plain gRPC or ESI server: there would be
        no redundancy) unless ``allow_plain=True``, which then uses it over
        plain gRPC (``upstream_kind == "plain"``). With ``name`` (``[Resi]
        Name``) its Opens name this client, with an instance drawn for it:
        the end gateway then frees at once the sessions that an earlier
        client (or client gateway) of that name left without a live path;
        without it the client is anonymous and its sessions are never freed
        that way."""
        # Validated as a gateway's file; nothing listens ("Listen" only
        # satisfies the check).
        config: dict[str, Any] = {"Tcp": {"Address": list(paths), "Listen": "127.0.0.1:0"}, "Resi": {"Mode": mode, **resi}}
        if reverse_address is not None:
            addrs = reverse_address if isinstance(reverse_address, str) else list(reverse_address)
            config["Reverse"] = {"Address": addrs}
        tls = _client_tls(tls_ca, tls_cert, tls_key, tls_server_name)
        if tls is not None:
            config["Tls"] = tls
        named = any(k.replace("_", "").replace("-", "").lower() == "name" for k in resi)
        client = cls(_resi.Client.redundant(config, "<keyword arguments>", named))
        await client._ready()
        if client.upstream_kind == "plain" and not allow_plain:
            await client.close()
            raise NotEndGatewayError(
                f"{paths[0]} is not a resi end gateway (it answered as a plain gRPC server, so there would be "
                "no redundancy); pass allow_plain=True to use it over plain gRPC",
                address=paths[0],
            )
        return client

    async def _ready(self) -> None:
        try:
            await self._c.ready()
        except BaseException:
            await self._c.close()
            raise

    async def close(self) -> None:
        """Closes the connection or session; in-flight calls fail
        UNAVAILABLE, later calls fail UNAVAILABLE at once, and the
        :meth:`events` streams end."""
        await self._c.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def upstream_kind(self) -> str | None:
        return self._c.upstream_kind

    async def unary(
        self, path: str, request: bytes, *, metadata: Metadata | None = None, timeout: float | None = None
    ) -> bytes:
        """A unary call on ``path`` (``/package.Service/Method``)."""
        reply, abort = self._c.unary(path, request, None if metadata is None else _md(metadata), timeout)
        try:
            return await reply
        except asyncio.CancelledError:
            abort.abort()
            raise

    def server_stream(
        self, path: str, request: bytes, *, metadata: Metadata | None = None, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """A server-streaming call: ``async for reply in client.server_stream(...)``."""
        return _replies(self._c.start_call(path, request, _md(metadata), timeout), None)

    async def client_stream(
        self, path: str, requests: Messages, *, metadata: Metadata | None = None, timeout: float | None = None
    ) -> bytes:
        """A client-streaming call: sends every message of ``requests``
        (iterable or async iterable), returns the one reply."""
        replies = [r async for r in _replies(self._c.start_call(path, None, _md(metadata), timeout), requests)]
        if len(replies) != 1:
            raise CallError(StatusCode.INTERNAL, f"expected one reply, got {len(replies)}")
        return replies[0]

    def bidi(
        self, path: str, requests: Messages, *, metadata: Metadata | None = None, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """A bidirectional call: ``requests`` are sent while replies are read."""
        return _replies(self._c.start_call(path, None, _md(metadata), timeout), requests)

    def call(
        self,
        path: str,
        request: bytes | None = None,
        *,
        metadata: Metadata | None = None,
        timeout: float | None = None,
    ) -> _resi.Call:
        """The low-level call object (``send``/``close_send``/``receive``,
        metadata, ``cancel``) for anything the helpers above do not cover."""
        return self._c.start_call(path, request, _md(metadata), timeout)

    async def modify(
        self,
        ext_id: int,
        data: bytes = b"",
        *,
        pass_: bool = False,
        metadata: Metadata | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """``/esi.Esi/Modify`` with extension ``ext_id``; returns the
        answer's ``data``. ``pass_=True`` lets hops that do not know the id
        forward it; otherwise the first such hop answers UNIMPLEMENTED."""
        return await self._c.modify(ext_id, data, pass_, _md(metadata), timeout)

    def register(self, ext_id: int, handler: Handler) -> None:
        """Answers ``Modify`` for ``ext_id`` in this process (see :meth:`Gateway.register`)."""
        self._c.register(ext_id, handler)

    def unregister(self, ext_id: int) -> bool:
        return self._c.unregister(ext_id)

    def aio_channel(self) -> resi.aio.Channel:
        """A ``grpc.aio``-compatible channel over this client, for stubs
        generated by grpcio-tools (see :class:`resi.aio.Channel`; needs grpcio)."""
        from .aio import Channel

        return Channel(self)

    async def stats(self) -> SessionStats | None:
        """Per-path statistics of the redundant session, every configured
        path included with its transport, address, state and the reason it
        is down (None for a plain client or while not connected)."""
        return await self._c.stats()

    def events(self) -> EventStream:
        """Events of the redundant session from now on (with timestamps;
        ``session_closed`` last); the stream ends once the client is closed."""
        return self._c.events()


def _md(metadata: Metadata | Mapping[str, str | bytes] | None) -> list[tuple[str, str | bytes]] | None:
    if metadata is None:
        return None
    if isinstance(metadata, Mapping):
        return list(metadata.items())
    return list(metadata)


async def _pump(call: _resi.Call, requests: Messages) -> None:
    try:
        if isinstance(requests, AsyncIterable):
            async for m in requests:
                if not await call.send(m):
                    break
        else:
            for m in requests:
                if not await call.send(m):
                    break
    except BaseException:
        call.cancel()
        raise
    finally:
        call.close_send()


async def _replies(call: _resi.Call, requests: Messages | None) -> AsyncIterator[bytes]:
    pump = asyncio.ensure_future(_pump(call, requests)) if requests is not None else None
    try:
        while True:
            try:
                msg = await call.receive()
            except CallError:
                if pump is not None and pump.done() and not pump.cancelled() and pump.exception() is not None:
                    raise pump.exception() from None  # type: ignore[misc]
                raise
            if msg is None:
                break
            yield msg
        if pump is not None:
            await pump
    finally:
        if pump is not None and not pump.done():
            pump.cancel()
        call.cancel()
