"""Test aids: an ESI node to put behind gateways, and a gateway pair with
per-path fault controls. The pytest plugin (:mod:`resi.pytest_plugin`)
hands them out as fixtures; they work without pytest too. The simulated
ESI roles the plugin also hands out are :mod:`resi.sim`'s.

:class:`EsiNode` needs ``grpcio`` (``pip install "resi[pytest]"``): it is an
independent gRPC implementation, so what crosses the gateways is checked by
a peer that is not resi.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from . import Client, FaultRelay, Gateway

#: The echo service of :class:`EsiNode`.
ECHO_SERVICE = "resi.test.Echo"
#: The extension id :class:`EsiNode` answers in ``Modify`` by default.
NODE_EXTENSION = 4242


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def encode_modify(ext_id: int, passthrough: bool, data: bytes = b"") -> bytes:
    """An ``esi.ModifyRequest`` / ``ModifyResponse`` (same layout), by hand."""
    ext = b""
    if ext_id:
        ext += b"\x08" + _varint(ext_id)
    if passthrough:
        ext += b"\x10\x01"
    if data:
        ext += b"\x1a" + _varint(len(data)) + data
    return b"\x0a" + _varint(len(ext)) + ext


def decode_modify(buf: bytes) -> tuple[int, bool, bytes]:
    """``(id, pass, data)`` of a ``ModifyRequest`` / ``ModifyResponse``."""

    def fields(b: bytes) -> dict[int, Any]:
        out: dict[int, Any] = {}
        i = 0
        while i < len(b):
            key, i = _read_varint(b, i)
            num, wt = key >> 3, key & 7
            if wt == 0:
                out[num], i = _read_varint(b, i)
            elif wt == 2:
                ln, i = _read_varint(b, i)
                out[num] = b[i : i + ln]
                i += ln
            else:
                raise ValueError(f"unexpected wire type {wt}")
        return out

    ext = fields(fields(buf).get(1, b""))
    return int(ext.get(1, 0)), bool(ext.get(2, 0)), bytes(ext.get(3, b""))


class EsiNode:
    """An ESI server on 127.0.0.1 (grpcio, raw bytes, worker threads).

    Methods of ``/resi.test.Echo/``: ``Unary`` (answers the request),
    ``ServerStream`` (the request three times, suffixed ``/0``..``/2``),
    ``ClientStream`` (the requests joined by ``|``), ``Bidi`` (each request
    back), ``Wait`` (waits the request's number of milliseconds or until
    the caller cancels; cancellations are counted in :attr:`cancelled`) and
    ``Fail`` (fails with the status code named by the request, e.g.
    ``b"NOT_FOUND"``, with trailing metadata ``x-node: failed``).
    Metadata keys starting ``x-`` come back as ``echo-x-...`` response
    headers. ``/esi.Esi/Modify`` answers the ids in :attr:`extensions`
    (``{NODE_EXTENSION: b"node:" + data}`` by default) and refuses the others
    ``UNIMPLEMENTED``, like any last hop.
    """

    def __init__(self, max_workers: int = 64) -> None:
        import grpc

        self._grpc = grpc
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
        )
        self.calls = 0
        self.cancelled = 0
        self.waiting = threading.Event()
        self.modify_seen: list[tuple[int, bool, bytes]] = []
        self.extensions: dict[int, Callable[[bytes], bytes]] = {NODE_EXTENSION: lambda d: b"node:" + d}
        self._lock = threading.Lock()
        h = grpc
        echo = {
            "Unary": h.unary_unary_rpc_method_handler(self._unary),
            "ServerStream": h.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": h.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": h.stream_stream_rpc_method_handler(self._bidi),
            "Wait": h.unary_unary_rpc_method_handler(self._wait),
            "Fail": h.unary_unary_rpc_method_handler(self._fail),
        }
        self.server.add_generic_rpc_handlers(
            (
                h.method_handlers_generic_handler(ECHO_SERVICE, echo),
                h.method_handlers_generic_handler("esi.Esi", {"Modify": h.unary_unary_rpc_method_handler(self._modify)}),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> EsiNode:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None).wait(timeout=10)

    def _count(self, context: Any) -> None:
        with self._lock:
            self.calls += 1
        md = [("echo-" + k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]
        context.send_initial_metadata(md)

    def _unary(self, request: bytes, context: Any) -> bytes:
        self._count(context)
        return request

    def _server_stream(self, request: bytes, context: Any) -> Any:
        self._count(context)
        for i in range(3):
            yield request + b"/%d" % i

    def _client_stream(self, requests: Any, context: Any) -> bytes:
        self._count(context)
        return b"|".join(requests)

    def _bidi(self, requests: Any, context: Any) -> Any:
        self._count(context)
        yield from requests

    def _wait(self, request: bytes, context: Any) -> bytes:
        self._count(context)
        done = threading.Event()

        def on_end() -> None:
            if not done.is_set():
                with self._lock:
                    self.cancelled += 1

        context.add_callback(on_end)
        self.waiting.set()
        deadline = time.monotonic() + int(request or b"1000") / 1000.0
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        done.set()
        return b"waited"

    def _fail(self, request: bytes, context: Any) -> bytes:
        self._count(context)
        context.set_trailing_metadata([("x-node", "failed")])
        context.abort(self._grpc.StatusCode[request.decode()], f"failed as asked ({request.decode()})")
        return b""

    def _modify(self, request: bytes, context: Any) -> bytes:
        self._count(context)
        ext_id, passthrough, data = decode_modify(request)
        with self._lock:
            self.modify_seen.append((ext_id, passthrough, data))
        handler = self.extensions.get(ext_id)
        if handler is None:
            context.abort(self._grpc.StatusCode.UNIMPLEMENTED, f"extension {ext_id} is not implemented by this node")
        return encode_modify(ext_id, passthrough, handler(data))


#: Session timers of test pairs: paths are declared dead quickly.
FAST_TIMERS = {"heartbeat_interval": "50ms", "dead_timeout": "400ms", "redial_max_backoff": "200ms"}


@dataclass
class Pair:
    """An end gateway in front of ``upstream`` and an in-process redundant
    client joined to it over ``len(relays)`` TCP paths, each through a
    :class:`~resi.FaultRelay` (path ``i`` is ``relays[i]``)."""

    end: Gateway
    client: Client
    relays: list[FaultRelay]
    upstream: str
    mode: str
    extra: list[Any] = field(default_factory=list)

    def kill(self, path: int) -> None:
        """Cuts path ``path`` (connections reset, new ones refused)."""
        self.relays[path].kill()

    def blackhole(self, path: int) -> None:
        """Silences path ``path`` (connections stay open, nothing passes)."""
        self.relays[path].blackhole()

    def corrupt(self, path: int, share: float = 0.001, direction: str = "both") -> None:
        """Flips a bit in ``share`` of the bytes on path ``path`` (a faulty
        link): the frame check catches it and the path is blamed."""
        self.relays[path].corrupt(share, direction)

    def delay(self, path: int, latency: float, jitter: float = 0.0) -> None:
        """Delays path ``path`` by ``latency`` seconds plus a random
        ``0..jitter`` (a long link; order kept)."""
        self.relays[path].delay(latency, jitter)

    def bandwidth(self, path: int, bytes_per_sec: Optional[int]) -> None:
        """Limits path ``path`` to ``bytes_per_sec`` each way (None: unlimited)."""
        self.relays[path].bandwidth(bytes_per_sec)

    def flap(self, path: int, up: float, down: float, for_: float, how: str = "blackhole") -> None:
        """Flaps path ``path`` by itself: ``up`` seconds up, ``down`` seconds
        down (``"blackhole"`` or ``"kill"``), for ``for_`` seconds."""
        self.relays[path].flap(up, down, for_, how)

    def heal(self, path: int) -> None:
        """Lets path ``path`` carry traffic again at full speed."""
        self.relays[path].heal()

    async def wait_paths(self, up: int, timeout: float = 10.0) -> None:
        """Waits until the client's session has exactly ``up`` live paths."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            stats = await self.client.stats()
            live = sum(p.state == "up" for p in stats.paths) if stats else 0
            if live == up:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {up} live paths within {timeout}s, have {live}: {stats and stats.paths}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.client.close()
        await self.end.stop()
        for r in self.relays:
            r.close()


class PairFactory(Protocol):
    """The ``resi_pair`` fixture: ``await resi_pair(mode="strict", paths=2,
    upstream=None, **resi_keys)`` starts a :class:`Pair` in front of
    ``upstream`` (``"host:port"``; default: the ``esi_node`` fixture)."""

    async def __call__(self, mode: str = "strict", paths: int = 2, *, upstream: Optional[str] = None, **resi_keys: Any) -> Pair: ...


class GatewayFactory(Protocol):
    """The ``resi_gateway`` fixture: ``await resi_gateway(**config)`` starts
    a :class:`~resi.Gateway` (keyword arguments as ``resi.Gateway``)."""

    async def __call__(self, **config: Any) -> Gateway: ...


async def start_pair(upstream: str, *, mode: str = "strict", paths: int = 2, **resi_keys: Any) -> Pair:
    """Starts an end gateway in front of ``upstream`` (``"host:port"`` of an
    ESI server), one fault relay per path and a redundant client through
    them. Keyword arguments are ``[Resi]`` keys for both ends (fast timers
    by default)."""
    keys = {**FAST_TIMERS, **resi_keys}
    end = Gateway(listen=["127.0.0.1:0"] * paths, address=upstream, mode=mode, name="end", **keys)
    await end.start()
    relays = [FaultRelay(a) for a in end.addresses]
    try:
        client = await Client.connect_redundant([r.address for r in relays], mode=mode, **keys)
    except BaseException:
        await end.stop()
        for r in relays:
            r.close()
        raise
    return Pair(end=end, client=client, relays=relays, upstream=upstream, mode=mode)


def resi_command() -> str:
    """The ``resi`` command to start gateway processes with: ``$RESI_BIN``,
    else the one beside this interpreter (a venv not on PATH), else the one
    on PATH; :class:`RuntimeError` if there is none."""
    env = os.environ.get("RESI_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "resi"
    if beside.exists():
        return str(beside)
    found = shutil.which("resi")
    if not found:
        raise RuntimeError("the `resi` command is not installed: run `pip install .` first")
    return found
