"""Deliberately broken end gateways, to prove the conformance suite can fail.

``BrokenEndGateway(target, fault)`` listens on 127.0.0.1 (a free port) in
front of a real resi end gateway at ``target`` and forwards everything,
except that it breaks one rule of docs/protocol.md:

- ``"skip_acks"``: drops every ACK frame the gateway sends on a RESI path
  (R-5.5-1: the peer never hears what arrived);
- ``"reuse_cookie"``: answers a second presentation of a merge cookie
  itself, with a made-up ``merged`` (R-3.2-4: it accepts a reused cookie);
- ``"forget_dialler"``: removes ``dialler`` and ``instance`` from every
  Open in a HELLO, as an acceptor that ignores them would (R-3.1-9: the
  path-less session of a restarted dialler is kept).

It is an asyncio server: start it inside the loop that runs the suite.
"""

from __future__ import annotations

import asyncio
import os
import struct

from resi.conformance import wire

HEADER = 12


def split_frames(buf: bytearray) -> list[bytes]:
    """Whole frames at the start of `buf` (removed from it), unchecked."""
    out = []
    while len(buf) >= HEADER:
        length = struct.unpack_from(">I", buf, 4)[0]
        if len(buf) < HEADER + length:
            break
        out.append(bytes(buf[: HEADER + length]))
        del buf[: HEADER + length]
    return out


class BrokenEndGateway:
    def __init__(self, target: str, fault: str):
        assert fault in ("skip_acks", "reuse_cookie", "forget_dialler")
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.fault = fault
        self.seen_cookies: set[bytes] = set()
        self.dropped_acks = 0
        self.accepted_reuses = 0
        self.forgotten_diallers = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server:
            self._server.close()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readexactly(8), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if head.startswith(b"RESI") and self.fault in ("reuse_cookie", "forget_dialler"):
            await self._serve_hello(head, reader, writer)
            return
        up_r, up_w = await asyncio.open_connection(*self.target)
        up_w.write(head)
        path = head.startswith(b"RESI")
        await asyncio.gather(self._copy(reader, up_w, False), self._copy(up_r, writer, path and self.fault == "skip_acks"))

    async def _serve_hello(self, head: bytes, reader, writer) -> None:
        """Reads the HELLO and answers a reused cookie itself, or forgets
        the dialler of an Open; forwards the (rewritten) HELLO and the rest
        of the connection."""
        buf = bytearray()
        while not (frames := split_frames(buf)):
            chunk = await reader.read(65536)
            if not chunk:
                writer.close()
                return
            buf += chunk
        hello = frames[0]
        req = wire.esi_pb2.ModifyRequest.FromString(hello[HEADER:])
        red = wire.resi_pb2.Redundancy.FromString(req.ext.data)
        if self.fault == "forget_dialler" and red.WhichOneof("msg") == "open" and red.open.dialler:
            self.forgotten_diallers += 1
            red.open.dialler, red.open.instance = "", b""
            req.ext.data = red.SerializeToString()
            frames[0] = wire.encode(wire.HELLO, req.SerializeToString())
        if self.fault == "reuse_cookie" and red.WhichOneof("msg") == "merge":
            cookie = red.merge.cookie
            if cookie in self.seen_cookies:
                self.accepted_reuses += 1
                merged = wire.resi_pb2.MergeResponse(path_id=red.merge.path_id, next_cookie=os.urandom(24), cookie_ttl_ms=60_000)
                writer.write(wire.encode(wire.HELLO_REPLY, wire.hello_reply_body(wire.resi_pb2.Redundancy(merged=merged))))
                await asyncio.sleep(0.5)
                writer.close()
                return
            self.seen_cookies.add(cookie)
        rest = b"".join(frames) + bytes(buf)
        up_r, up_w = await asyncio.open_connection(*self.target)
        up_w.write(head + rest)
        await asyncio.gather(self._copy(reader, up_w, False), self._copy(up_r, writer, False))

    async def _copy(self, reader, writer, drop_acks: bool) -> None:
        buf = bytearray()
        try:
            while chunk := await reader.read(65536):
                if not drop_acks:
                    writer.write(chunk)
                    continue
                buf += chunk
                for frame in split_frames(buf):
                    if frame[0] == wire.ACK:
                        self.dropped_acks += 1
                        continue
                    writer.write(frame)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
