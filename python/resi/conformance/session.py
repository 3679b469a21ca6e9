"""The suite's own side of a RESI session: paths over TCP that answer
heartbeats and acknowledge what they receive, and a session that sends one
byte stream on its paths and reassembles the peer's (first copy wins).

Everything is observable and switchable, because the checks need to see
what the peer did (every frame received is kept) and to misbehave on
purpose (send on one path only, alter a copy, go silent, skip the ACKs).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Callable, Optional

from . import wire

HEARTBEAT = 0.2
_tokens = itertools.count(1)


class Path:
    """One established path: a TCP connection past its handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, session: Optional["Session"] = None):
        self.reader, self.writer, self.name = reader, writer, name
        self.session = session
        self.decoder = wire.Decoder()
        self.frames: list[wire.Frame] = []
        self.acks: list[tuple[int, int]] = []
        self.pings = 0
        self.received = 0  # contiguous position of the peer's stream on this path
        self.data_offsets: list[tuple[int, int]] = []
        self.controls: list = []
        self.violations: list[str] = []
        self.auto_pong = True
        self.keepalive = True
        self.send_acks = session.send_acks if session else True
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._changed = asyncio.Event()
        self._pongs: dict[int, asyncio.Event] = {}
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._beat())]

    # --- sending ---------------------------------------------------------

    def send(self, raw: bytes) -> None:
        if not self.closed.is_set():
            self.writer.write(raw)

    def data(self, offset: int, payload: bytes, fin: bool = False) -> None:
        for i in range(0, max(len(payload), 1), wire.MAX_DATA_PAYLOAD):
            chunk = payload[i : i + wire.MAX_DATA_PAYLOAD]
            self.send(wire.data(offset + i, chunk, fin and i + wire.MAX_DATA_PAYLOAD >= len(payload)))

    async def ping(self, timeout: float = 3.0) -> bool:
        """A PING answered by a PONG with its token on this path."""
        token = next(_tokens) | (1 << 40)
        done = self._pongs[token] = asyncio.Event()
        self.send(wire.ping(token))
        try:
            await asyncio.wait_for(done.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def abort(self) -> None:
        """Drops the connection like a failed link."""
        self.keepalive = False
        self.writer.close()
        self.closed.set()
        self.close_reason = self.close_reason or "closed by the suite"

    # --- waiting ---------------------------------------------------------

    async def until(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Waits (bounded) until `cond()` holds after some received frame."""
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))
            except asyncio.TimeoutError:
                pass
        return True

    async def wait_closed(self, timeout: float) -> bool:
        return await self.until(self.closed.is_set, timeout)

    def last_ack(self) -> tuple[int, int]:
        return self.acks[-1] if self.acks else (0, 0)

    def close_codes(self) -> list[int]:
        return [c.close.reason.code for c in self.controls if c.WhichOneof("msg") == "close"]

    # --- receiving -------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    self.close_reason = self.close_reason or "peer closed the connection"
                    break
                self._handle(self.decoder.feed(chunk))
        except wire.WireError as e:
            self.violations.append(str(e))
            self.close_reason = str(e)
        except (ConnectionError, OSError) as e:
            self.close_reason = self.close_reason or f"connection error: {e}"
        finally:
            self.closed.set()
            self._changed.set()
            self.writer.close()

    def _handle(self, frames: list[wire.Frame]) -> None:
        for f in frames:
            self.frames.append(f)
            if f.kind == wire.DATA:
                self._on_data(f)
            elif f.kind == wire.ACK:
                self._on_ack(*f.u64s())
            elif f.kind == wire.PING:
                self.pings += 1
                if self.auto_pong:
                    self.send(wire.pong(f.u64s()[0]))
            elif f.kind == wire.PONG:
                ev = self._pongs.pop(f.u64s()[0], None)
                if ev:
                    ev.set()
            elif f.kind == wire.CONTROL:
                msg = wire.control(f.body)
                if msg is not None:
                    self.controls.append(msg)
                    if self.session:
                        self.session.on_control(self, msg)
        self._changed.set()

    def _on_ack(self, path_received: int, delivered: int) -> None:
        prev = self.last_ack()
        if path_received < prev[0] or delivered < prev[1]:
            self.violations.append(f"ACK went back from {prev} to {(path_received, delivered)}")
        self.acks.append((path_received, delivered))
        if self.session:
            self.session.on_ack(delivered)

    def _on_data(self, f: wire.Frame) -> None:
        offset, payload = f.offset, f.payload
        self.data_offsets.append((offset, len(payload)))
        if len(payload) > wire.MAX_DATA_PAYLOAD:
            self.violations.append(f"DATA of {len(payload)} bytes (more than 64 KiB)")
        delivered = self.session.delivered if self.session else 0
        if offset > self.received:
            if offset > delivered:
                self.violations.append(f"DATA at {offset} leaves a gap on a reliable path (received {self.received}, acknowledged {delivered})")
                return
            self.received = offset
        end = offset + len(payload)
        if end > self.received:
            fresh = payload[self.received - offset :]
            if self.session:
                self.session.on_bytes(self, self.received, fresh)
            self.received = end
        if self.send_acks:
            self.send(wire.ack(self.received, self.session.delivered if self.session else self.received))

    async def _beat(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(HEARTBEAT)
            if self.keepalive:
                self.send(wire.ping(next(_tokens)))
                try:
                    await self.writer.drain()
                except (ConnectionError, OSError):
                    return

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        self.writer.close()


class Session:
    """The suite's end of a session: one byte stream out, one in."""

    def __init__(self) -> None:
        self.paths: dict[int, Path] = {}
        self.out = bytearray()  # everything written so far, from offset 0
        self.inbound = bytearray()  # the peer's stream, first copy wins
        self.mismatches = 0
        self.acked = 0  # the peer's latest `delivered`
        self.cookies: list[bytes] = []
        self.session_id = b""
        self.mode = wire.UNSPECIFIED
        self.closes: list[int] = []
        #: Whether new paths acknowledge what they receive (a check that
        #: wants the peer to keep its bytes turns this off before dialling).
        self.send_acks = True
        self._sink: Optional[asyncio.StreamWriter] = None

    @property
    def delivered(self) -> int:
        return len(self.inbound)

    def live(self) -> list[Path]:
        return [p for p in self.paths.values() if not p.closed.is_set()]

    def write(self, payload: bytes, paths: Optional[list[Path]] = None) -> tuple[int, int]:
        """Appends to the stream and sends it on `paths` (default: every live
        path); returns its range."""
        start = len(self.out)
        self.out += payload
        for p in self.live() if paths is None else paths:
            p.data(start, payload)
        return start, len(self.out)

    def on_bytes(self, path: Path, offset: int, payload: bytes) -> None:
        have = len(self.inbound)
        overlap = self.inbound[offset : offset + len(payload)]
        if bytes(overlap) != payload[: len(overlap)]:
            self.mismatches += 1
        if offset + len(payload) > have:
            fresh = payload[have - offset :]
            self.inbound += fresh
            if self._sink is not None:
                self._sink.write(fresh)

    def on_ack(self, delivered: int) -> None:
        self.acked = max(self.acked, delivered)

    def on_control(self, path: Path, msg) -> None:
        if msg.WhichOneof("msg") == "close":
            self.closes.append(msg.close.reason.code)

    def close(self, code: int = 0, message: str = "") -> None:
        for p in self.live():
            p.send(wire.close_frame(code, message))

    def stop(self) -> None:
        for p in self.paths.values():
            p.stop()
        if self._sink is not None:
            self._sink.close()

    async def bridge(self) -> int:
        """A loopback port whose one connection is this session's stream:
        an HTTP/2 client (grpcio) connected there talks to the peer."""

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._sink = writer
            writer.write(bytes(self.inbound))
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                self.write(chunk)

        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]


async def dial(host: str, port: int, hello: bytes, session: Optional[Session], name: str, *, preface: bytes = wire.PREFACE, timeout: float = 5.0):
    """Connects a TCP path and runs its handshake. Returns ``(path, reply)``:
    the path is None when the HELLO was refused (the reply says why) or not
    answered (reply None)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(preface + wire.encode(wire.HELLO, hello))
    decoder = wire.Decoder()
    frames: list[wire.Frame] = []
    try:
        while not frames:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                writer.close()
                return None, None
            frames = decoder.feed(chunk)
    except (asyncio.TimeoutError, ConnectionError, wire.WireError):
        writer.close()
        return None, None
    first = frames[0]
    if first.kind != wire.HELLO_REPLY:
        writer.close()
        raise wire.WireError(f"first frame is type {first.kind}, not HELLO_REPLY")
    reply = wire.hello_reply(first.body)
    if reply.redundancy is None:
        # A refusal: the acceptor closes the connection (R-3.3-4).
        reply.stayed_open = not await _sees_eof(reader, timeout)
        writer.close()
        return None, reply
    path = Path(reader, writer, name, session)
    # Frames that came in the same read as the reply, before the reader runs.
    path._handle(frames[1:])
    path._handle(path.decoder.feed(bytes(decoder.buf)))
    return path, reply


async def _sees_eof(reader: asyncio.StreamReader, timeout: float) -> bool:
    """Whether the peer closes the connection within `timeout` (bytes it
    sends meanwhile are read and ignored)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not await asyncio.wait_for(reader.read(65536), max(0.0, deadline - time.monotonic())):
                return True
    except asyncio.TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return False
