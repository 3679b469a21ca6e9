"""NKN from asyncio: identities, a client and the embedded local node.

NKN (nkn.org) is a relay network addressed by public keys. ``resi`` speaks
its client protocol in Rust; this module exposes it directly::

    from resi.nkn import LocalNode, NknClient

    async with LocalNode() as node:
        async with NknClient(rpc_servers=[node.rpc_url]) as a, NknClient(rpc_servers=[node.rpc_url]) as b:
            await a.send(b.address, b"hello")
            msg = await b.recv(timeout=5)
            await b.reply(msg, b"hi")

- :class:`Identity` — an Ed25519 seed, its public key and its address
  (:func:`generate_identity`, :func:`identity_from_seed`).
- :class:`NknClient` — a MultiClient: ``subclients`` connections sharing
  one address, one message ID per send, duplicates removed on arrival.
- :class:`LocalNode` — resi's embedded NKN node (seed RPC and WebSocket
  relay on 127.0.0.1), so NKN works without the internet; pass its
  :attr:`LocalNode.rpc_url` as ``rpc_servers``.

Every wait runs on the Rust runtime with the GIL released. Timeouts raise
:class:`TimeoutError`; a malformed address raises :class:`ValueError`;
other failures raise :class:`resi.ResiError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from . import _resi
from ._resi import NknMessage

__all__ = [
    "Identity",
    "LocalNode",
    "NknClient",
    "NknMessage",
    "generate_identity",
    "identity_from_seed",
]

_Buffer = Union[bytes, bytearray, memoryview]
#: One destination address or several.
Dest = Union[str, Sequence[str]]


@dataclass(frozen=True)
class Identity:
    """An NKN identity: the Ed25519 ``seed`` (64 hex digits; keep it
    secret), its ``public_key`` (64 hex digits) and the bare ``address``
    (the public key; a client adds ``identifier.`` in front)."""

    seed: str
    public_key: str
    address: str

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity."""
        return cls(*_resi.nkn_generate_identity())

    @classmethod
    def from_seed(cls, seed: str) -> Identity:
        """The identity of ``seed`` (64 hex digits); ``ValueError`` otherwise."""
        return cls(*_resi.nkn_identity_from_seed(seed))

    def __repr__(self) -> str:
        # The seed is a secret: not shown.
        return f"Identity(public_key={self.public_key!r})"


def generate_identity() -> Identity:
    """A new random NKN identity."""
    return Identity.generate()


def identity_from_seed(seed: str) -> Identity:
    """The NKN identity of ``seed`` (64 hex digits)."""
    return Identity.from_seed(seed)


class NknClient:
    """An NKN MultiClient in this process.

    ``seed`` is an :class:`Identity`, 64 hex digits, or None for a new
    random identity. The client connects in the background through the
    seed RPC servers ``rpc_servers`` (the public NKN seeds when None; a
    :class:`LocalNode`'s :attr:`~LocalNode.rpc_url` for a local test);
    ``subclients`` connections (``__0__.``, ``__1__.``, ...) share the
    address ``[identifier.]public_key``.

    Use it as ``async with NknClient(...) as c:`` (waits until ready, closes
    at the end) or call :meth:`wait_ready` and :meth:`close`.
    """

    def __init__(
        self,
        seed: Identity | str | None = None,
        *,
        identifier: str = "",
        subclients: int = 4,
        rpc_servers: Sequence[str] | None = None,
        original_client: bool = False,
        ready_timeout: float = 10.0,
    ) -> None:
        if seed is None:
            identity = Identity.generate()
        elif isinstance(seed, Identity):
            identity = seed
        else:
            identity = Identity.from_seed(seed)
        self.identity = identity
        self.ready_timeout = ready_timeout
        servers = None if rpc_servers is None else [str(s) for s in rpc_servers]
        self._c = _resi.NknClient(identity.seed, identifier, subclients, servers, original_client)

    @property
    def address(self) -> str:
        """This client's address (``[identifier.]public_key_hex``)."""
        return self._c.address

    @property
    def ready_count(self) -> int:
        """How many sub-clients are connected now."""
        return self._c.ready_count

    async def wait_ready(self, timeout: float = 10.0, count: int = 1) -> None:
        """Waits until ``count`` sub-clients are connected;
        :class:`TimeoutError` after ``timeout`` seconds."""
        await self._c.wait_ready(timeout, count)

    async def send(
        self, dest: Dest, data: _Buffer, *, no_reply: bool = False, max_holding: int = 0, encrypt: bool = True
    ) -> bytes:
        """Sends ``data`` (binary) to ``dest`` over every ready sub-client
        and returns the 8-byte message ID. ``max_holding``: seconds the node
        may hold it for an offline destination (0: drop)."""
        return await self._c.send(dest, data, no_reply=no_reply, max_holding=max_holding, encrypt=encrypt)

    async def send_and_wait_reply(
        self, dest: Dest, data: _Buffer, timeout: float = 5.0, *, max_holding: int = 0, encrypt: bool = True
    ) -> bytes:
        """Sends ``data`` and returns the first reply's data (``b""`` for an
        ACK); :class:`TimeoutError` after ``timeout`` seconds."""
        return await self._c.send_and_wait_reply(dest, data, timeout, max_holding=max_holding, encrypt=encrypt)

    async def recv(self, timeout: float | None = None) -> NknMessage:
        """The next message (``.src``, ``.data``, ``.message_id``);
        :class:`TimeoutError` after ``timeout`` seconds (None: no limit),
        :class:`resi.ResiError` once closed."""
        return await self._c.recv(timeout)

    async def reply(self, received: NknMessage, data: _Buffer | None = None) -> None:
        """Answers ``received`` with ``data`` (None: an ACK). Does nothing
        when the sender asked for no reply."""
        await self._c.reply(received, data)

    def close(self) -> None:
        """Closes every sub-client; waiting and later :meth:`recv` raise."""
        self._c.close()

    async def __aenter__(self) -> NknClient:
        try:
            await self.wait_ready(self.ready_timeout)
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NknClient({self.address!r}, ready={self.ready_count})"


class LocalNode:
    """resi's embedded NKN node: seed JSON-RPC and WebSocket relay on
    127.0.0.1 (free ports), enough for NKN clients (resi's or the official
    SDKs) to reach each other on a machine without internet.

    Use it as ``async with LocalNode() as node:`` or call :meth:`start` and
    :meth:`stop`. ``loss`` drops that fraction of relayed messages (a test
    knob; ``loss_seed`` makes it repeatable; :meth:`set_loss` changes it
    while running).
    """

    def __init__(self, *, loss: float = 0.0, loss_seed: int | None = None, max_holding_seconds: int = 3600) -> None:
        self.loss = loss
        self.loss_seed = loss_seed
        self.max_holding_seconds = max_holding_seconds
        self._n = _resi.NknLocalNode()

    async def start(self, loss: float | None = None) -> LocalNode:
        """Binds both listeners and starts serving (``loss`` overrides the
        constructor's)."""
        if loss is not None:
            self.loss = loss
        await self._n.start(self.loss, self.loss_seed, self.max_holding_seconds)
        return self

    async def stop(self) -> None:
        """Closes every connection and waits for the node's tasks."""
        await self._n.stop()

    async def __aenter__(self) -> LocalNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._n.running

    def set_loss(self, loss: float) -> None:
        """Changes the loss knob of the running node from now on: ``1.0``
        drops every relayed message (an NKN outage: clients stay connected,
        nothing arrives), ``0.0`` ends it. ``ValueError`` outside ``[0, 1]``."""
        self._n.set_loss(loss)
        self.loss = loss

    def set_faults(self, *, duplicate: float = 0.0, reorder: float = 0.0, delay: float = 0.0, jitter: float = 0.0) -> None:
        """Changes the message faults of the running node from now on (each
        call replaces all four; no argument ends them): ``duplicate`` and
        ``reorder`` are the shares in ``[0, 1]`` of relayed messages
        delivered twice, or held back and delivered after the next message
        to the same client (at most about a second later); every message is
        delivered ``delay`` seconds late plus a random ``0..jitter`` seconds
        (so jittered messages can overtake each other). Counted in
        :meth:`stats` as ``duplicated``, ``reordered`` and ``delayed``.
        ``ValueError`` for a share outside ``[0, 1]`` or a negative time."""
        self._n.set_faults(duplicate, reorder, delay, jitter)

    def faults(self) -> dict[str, float]:
        """The message faults now: ``duplicate``, ``reorder``, ``delay``, ``jitter``."""
        return self._n.faults()

    @property
    def rpc_url(self) -> str:
        """``http://127.0.0.1:PORT``: give it to clients as ``rpc_servers``."""
        return self._n.rpc_url

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT``: the relay clients are sent to."""
        return self._n.ws_url

    @property
    def public_key(self) -> str:
        """The node's public key (hex)."""
        return self._n.public_key

    def stats(self) -> dict[str, int]:
        """Counters since start: ``relayed`` (messages handed to a
        destination), ``outbound_messages``, ``clients_connected`` (now),
        ``dropped_loss``, ``dropped_offline``, ``held``... (see the Rust
        ``NodeStats``)."""
        return self._n.stats()

    def __repr__(self) -> str:
        return f"LocalNode({self._n.rpc_url if self.running else 'stopped'})"
