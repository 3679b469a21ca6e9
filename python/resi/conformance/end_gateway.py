"""The suite as a scripted client gateway (the dialler) against an end
gateway (the acceptor) under test.

Every check opens its own session (an Open in the HELLO of a TCP path,
§3.1), does one thing to it, looks at what comes back on the wire, and
ends it with ``Close``. The checks are listed in ``CHECKS`` with the
requirement of docs/protocol.md each one tests.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from typing import Optional

import grpc

from . import wire
from .report import HOLD_WINDOW, CheckFailed, Inconclusive, expect, retried
from .session import Path, Session, dial

#: How long the suite waits for something the spec says happens "at once".
PROMPT = 3.0
#: The longest cookie lifetime the suite waits out (R-3.2-4).
MAX_COOKIE_WAIT = 10.0


class EndGatewayChecks:
    def __init__(self, host: str, port: int, mode: int):
        self.host, self.port, self.mode = host, port, mode
        self.sessions: list[Session] = []

    # --- helpers ---------------------------------------------------------

    async def hello(self, body: bytes, session: Optional[Session], name: str, **kw):
        return await dial(self.host, self.port, body, session, name, **kw)

    async def open(self, cookies: int = 2, mode: Optional[int] = None, acks: bool = True, dialler: str = "", instance: bytes = b"") -> Session:
        """A new session with path 0 open (an Open in its HELLO, anonymous
        unless `dialler` and `instance` are given); with `acks` False its
        paths never acknowledge (the peer keeps every byte)."""
        s = Session()
        s.send_acks = acks
        deadline = time.monotonic() + 5
        hello = wire.open_request(self.mode if mode is None else mode, cookies, dialler=dialler, instance=instance)
        while True:
            path, reply = await self.hello(hello, s, "path 0")
            if reply is not None and reply.code == wire.RESOURCE_EXHAUSTED and time.monotonic() < deadline:
                await asyncio.sleep(0.2)  # the Open rate limit (§3.1): try again
                continue
            break
        expect(path is not None and reply is not None, f"Open in a HELLO refused: {reply}")
        opened = reply.redundancy.opened
        expect(reply.redundancy.WhichOneof("msg") == "opened", f"HELLO with open answered {reply}")
        s.cookies = list(opened.cookies)
        s.session_id, s.mode, s.cookie_ttl_ms = opened.session_id, opened.mode, opened.cookie_ttl_ms
        s.paths[0] = path
        self.sessions.append(s)
        return s

    async def merge(self, s: Session, path_id: int, cookie: Optional[bytes] = None):
        """Merges a path into `s` with its next cookie (or `cookie`)."""
        if cookie is None:
            expect(bool(s.cookies), "no cookie left to merge with")
            cookie = s.cookies.pop(0)
        path, reply = await self.hello(wire.merge_request(cookie, path_id), s, f"path {path_id}")
        if path is not None:
            merged = reply.redundancy.merged
            s.cookies.append(merged.next_cookie)
            s.paths[path_id] = path
        return path, reply

    async def two_paths(self, mode: Optional[int] = None) -> tuple[Session, Path, Path]:
        s = await self.open(2, mode)
        p1, reply = await self.merge(s, 1)
        expect(p1 is not None, f"merge of path 1 refused: {reply}")
        # A PONG on path 1 shows the session has the path in its live set.
        expect(await p1.ping(), "path 1 does not answer PING after its merge")
        return s, s.paths[0], p1

    async def refused(self, hello: bytes, code: int, message: str) -> str:
        path, reply = await self.hello(hello, None, "probe")
        if path is not None:
            path.stop()
        expect(reply is not None, "no HELLO_REPLY (connection closed or silent)")
        seen = f"{reply}"
        expect(reply.code == code and reply.message.startswith(message), f"expected {code} {message!r}, got {seen}")
        expect(not reply.stayed_open, f"{seen}: a refused HELLO must close its connection (R-3.3-4)")
        return seen

    async def path_closed(self, path: Path, what: str, survivor: Optional[Path] = None) -> str:
        closed = await path.wait_closed(PROMPT)
        expect(closed, f"path still open {PROMPT} s after {what}")
        if survivor is not None:
            expect(await survivor.ping(), f"the other path stopped answering PING after {what}")
            return f"path closed ({path.close_reason}); the other path still answers PING"
        return f"path closed ({path.close_reason})"

    def finish(self) -> None:
        for s in self.sessions:
            s.close()
        self.sessions.clear()

    async def stop(self) -> None:
        sessions = self.sessions[:]
        self.finish()
        await asyncio.sleep(0.05)
        for s in sessions:
            s.stop()

    # --- §2, §3.1 Open ---------------------------------------------------

    async def call_crosses_session(self) -> str:
        s, _, _ = await self.two_paths()
        port = await s.bridge()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.unary_unary("/esi.Esi/Modify")
            body = wire.esi_pb2.ModifyRequest(ext=wire.esi_pb2.Extension(id=wire.HOP_INFO)).SerializeToString()
            rsp = wire.esi_pb2.ModifyResponse.FromString(await call(body, timeout=PROMPT * 2))
        info = wire.resi_pb2.HopInfo.FromString(rsp.ext.data)
        expect(rsp.ext.id == wire.HOP_INFO, f"hop information answered with extension {rsp.ext.id}")
        expect(s.mismatches == 0, f"the two paths carried {s.mismatches} differing copies")
        return f"hop information over the session: name={info.name!r} version={info.version!r}"

    async def open_over_grpc(self) -> str:
        async with grpc.aio.insecure_channel(f"{self.host}:{self.port}") as ch:
            call = ch.unary_unary("/esi.Esi/Modify")
            seen = []
            for asked, want in ((3, 3), (0, 1), (40, 16)):
                reply = wire.modify_answer(await call(wire.open_request(self.mode, asked), timeout=PROMPT))
                expect(reply.redundancy.WhichOneof("msg") == "opened", f"Open answered {reply}")
                o = reply.redundancy.opened
                expect(len(o.session_id) == 16, f"session_id of {len(o.session_id)} bytes")
                expect(len(o.cookies) == want, f"asked for {asked} cookies, got {len(o.cookies)} (expected {want})")
                seen.append(f"{asked}->{len(o.cookies)}")
        return f"opened with a 16-byte session id; cookies asked->issued: {', '.join(seen)}"

    async def merge_over_grpc(self) -> str:
        async with grpc.aio.insecure_channel(f"{self.host}:{self.port}") as ch:
            call = ch.unary_unary("/esi.Esi/Modify")
            o = wire.modify_answer(await call(wire.open_request(self.mode, 1), timeout=PROMPT)).redundancy.opened
            merge = wire.modify(wire.resi_pb2.Redundancy(merge=wire.resi_pb2.MergeRequest(cookie=o.cookies[0], path_id=0)))
            try:
                await call(merge, timeout=PROMPT)
                raise CheckFailed("a merge sent as a gRPC call was answered OK")
            except grpc.aio.AioRpcError as e:
                expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"a merge sent as a gRPC call got {e.code().name} {e.details()!r}")
                seen = f"{e.code().name} {e.details()!r}"
        # The cookie was not spent: it still merges a path.
        s = Session()
        p, reply = await self.hello(wire.merge_request(o.cookies[0], 0), s, "path 0")
        expect(p is not None, f"the cookie no longer merges after the refused gRPC merge: {reply}")
        p.send(wire.close_frame(0))
        p.stop()
        return f"{seen}; the cookie still merges in a HELLO"

    async def bad_version(self) -> str:
        return await self.refused(wire.open_request(self.mode, 1, version=2), wire.FAILED_PRECONDITION, "")

    async def mode_in_force(self) -> str:
        seen = []
        for asked in (wire.PERMISSIVE, wire.STRICT, wire.UNSPECIFIED):
            s = await self.open(1, asked)
            want = wire.STRICT if asked != wire.PERMISSIVE else self.mode
            seen.append(f"{wire.MODE_NAMES[asked]}->{wire.MODE_NAMES.get(s.mode, s.mode)}")
            expect(s.mode == want, f"asked {wire.MODE_NAMES[asked]} of a {wire.MODE_NAMES[self.mode]} acceptor, opened.mode = {wire.MODE_NAMES.get(s.mode, s.mode)} (expected {wire.MODE_NAMES[want]})")
            s.close()
        return ", ".join(seen)

    async def open_in_hello(self) -> str:
        s = await self.open(3)
        expect(len(s.cookies) == 3, f"asked for 3 cookies in a HELLO open, the reply carries {len(s.cookies)}")
        expect(await s.paths[0].ping(), "path 0 does not answer PING after the Open")
        return "path 0 admitted at once; the reply carries the 3 cookies asked for"

    async def restarted_dialler(self) -> str:
        # Three runs of one dialler name: one keeps its path live (another
        # running gateway of that name), one dies without a Close, one is
        # its restart.
        name = f"conformance-{os.urandom(4).hex()}"
        running = await self.open(1, dialler=name, instance=os.urandom(16))
        dead = await self.open(2, dialler=name, instance=os.urandom(16))
        dead.paths[0].stop()  # its only path closes, no Close sent
        await asyncio.sleep(0.3)
        await self.open(1, dialler=name, instance=os.urandom(16))
        await asyncio.sleep(0.3)
        path, reply = await self.hello(wire.merge_request(dead.cookies[0], 1), None, "dead run")
        if path is not None:
            path.stop()
        ended = path is None and reply is not None and reply.code in (wire.UNAUTHENTICATED, wire.NOT_FOUND)
        expect(ended, f"the path-less session of the earlier run still takes a merge after the restarted dialler's Open: {reply}")
        expect(await running.paths[0].ping(), "the session of the same name with a live path was ended")
        return f"the earlier run's path-less session was ended (a merge with its cookie: {reply}); the one with a live path still answers PING"

    # --- §3.2 cookies ----------------------------------------------------

    async def cookie_entropy(self) -> str:
        s = await self.open(4)
        all_cookies = s.cookies + (await self.open(4)).cookies
        expect(all(len(c) >= 16 for c in all_cookies), f"cookie lengths {[len(c) for c in all_cookies]}")
        expect(len(set(all_cookies)) == len(all_cookies), "two cookies are equal")
        return f"{len(all_cookies)} distinct cookies of {sorted({len(c) for c in all_cookies})} bytes"

    async def forged_cookie(self) -> str:
        s = await self.open(1)
        forged = bytes(b ^ 0x5A for b in s.cookies[0])
        return await self.refused(wire.merge_request(forged, 1), wire.UNAUTHENTICATED, "unknown merge cookie")

    async def reused_cookie(self) -> str:
        s = await self.open(2)
        cookie = s.cookies[0]
        p1, reply = await self.merge(s, 1, cookie)
        expect(p1 is not None, f"first merge refused: {reply}")
        return await self.refused(wire.merge_request(cookie, 2), wire.PERMISSION_DENIED, "merge cookie already used")

    async def expired_cookie(self) -> str:
        s = await self.open(2)
        ttl = s.cookie_ttl_ms / 1000
        expect(ttl <= MAX_COOKIE_WAIT, f"cookie_ttl_ms = {s.cookie_ttl_ms}: longer than the suite waits ({MAX_COOKIE_WAIT:.0f} s); configure the target with CookieTtl of at most that")
        await asyncio.sleep(ttl + 0.3)
        await self.open(1)  # cookies issued meanwhile must not make the expired one "unknown"
        seen = await self.refused(wire.merge_request(s.cookies[0], 1), wire.UNAUTHENTICATED, "merge cookie expired")
        again = await self.refused(wire.merge_request(s.cookies[0], 1), wire.PERMISSION_DENIED, "merge cookie already used")
        return f"after {ttl:.1f} s: {seen}; presented again: {again}"

    async def next_cookie_chain(self) -> str:
        s = await self.open(1)
        expect(len(s.cookies) == 1, f"asked for 1 cookie, got {len(s.cookies)}")
        for i in range(3):
            p, reply = await self.merge(s, 1)
            expect(p is not None, f"merge {i + 1} with the previous next_cookie refused: {reply}")
            expect(len(s.cookies[-1]) >= 16, "next_cookie shorter than 128 bits")
        return "3 merges in a row, each with the next_cookie of the one before"

    async def ended_session_cookie(self) -> str:
        s = await self.open(2)
        s.close()
        expect(await s.paths[0].wait_closed(PROMPT), "path not closed after Close")
        path, reply = await self.hello(wire.merge_request(s.cookies[0], 1), None, "late")
        expect(path is None and reply is not None, f"merge into an ended session: {reply}")
        ok = (reply.code, reply.message) in ((wire.UNAUTHENTICATED, "unknown merge cookie"), (wire.NOT_FOUND, "the session of this cookie has ended"))
        expect(ok, f"merge into an ended session got {reply}")
        return f"{reply}"

    async def another_sessions_cookie(self) -> str:
        return await retried(self._another_sessions_cookie)

    async def _another_sessions_cookie(self) -> str:
        # Two strict sessions; a path merged with B's cookie must count in
        # B's delivery (B then waits for its copy) and not in A's.
        a = await self.open(2, wire.STRICT)
        b = await self.open(2, wire.STRICT)
        p, reply = await self.merge(b, 1, b.cookies[0])
        expect(p is not None, f"merge with B's cookie refused: {reply}")
        expect(await p.ping(), "the merged path does not answer PING")
        b0 = b.paths[0]
        t0 = time.monotonic()
        _, end = b.write(wire.H2_PREFACE, [b0])
        a.write(wire.H2_PREFACE, [a.paths[0]])
        expect(await a.paths[0].until(lambda: a.paths[0].last_ack()[1] >= end, PROMPT), "A did not deliver on its only path")
        expect(await b0.until(lambda: b0.last_ack()[0] >= end, PROMPT), "no ACK on B's path 0")
        await asyncio.sleep(0.3)
        if b0.last_ack()[1] and time.monotonic() - t0 > HOLD_WINDOW:
            raise Inconclusive(f"delivered after {time.monotonic() - t0:.1f} s, past the window")
        expect(b0.last_ack()[1] == 0, f"B delivered {b0.last_ack()[1]} bytes without the merged path's copy: the path did not join B")
        p.data(0, wire.H2_PREFACE)
        expect(await p.until(lambda: p.last_ack()[1] >= end, PROMPT), "B did not deliver once the merged path carried its copy")
        return "the path merged with B's cookie holds B's strict delivery until it carries its copy; A is unaffected"

    # --- §3.3 re-admission, §5 frames ------------------------------------

    async def readmission(self) -> str:
        s, _, p1 = await self.two_paths()
        new, reply = await self.merge(s, 1)
        expect(new is not None, f"second merge of path 1 refused: {reply}")
        closed = await p1.wait_closed(PROMPT)
        expect(closed, "the replaced connection of path 1 stayed open")
        expect(await new.ping(), "the new path 1 does not answer PING")
        return "the old path 1 was closed, the new one answers PING"

    async def bad_preface(self) -> str:
        path, reply = await self.hello(wire.open_request(self.mode, 1), None, "v1", preface=b"RESI\r\n\x00\x01")
        expect(path is None and reply is None, f"frame format 1 preface answered: {reply}")
        return "connection closed, no HELLO_REPLY"

    async def hello_without_redundancy(self) -> str:
        body = wire.modify(wire.resi_pb2.Redundancy(opened=wire.resi_pb2.OpenResponse()))
        return await self.refused(body, wire.INVALID_ARGUMENT, "")

    async def ignorable_unknown(self) -> str:
        s = await self.open(1)
        p = s.paths[0]
        p.send(wire.encode(0x42, b"ignore me", wire.FLAG_IGNORABLE))
        expect(await p.ping(), "no PONG after an unknown IGNORABLE frame")
        expect(not p.closed.is_set(), "path closed")
        return "skipped: the path still answers PING"

    async def flags_ignored(self) -> str:
        s = await self.open(1)
        p = s.paths[0]
        token = 0xC0FFEE
        p.send(wire.encode(wire.PING, struct.pack(">Q", token), 0x40, reserved=0x1234))
        got = await p.until(lambda: any(f.kind == wire.PONG and f.u64s()[0] == token for f in p.frames), PROMPT)
        expect(got, "no PONG to a PING with unknown flag bits and reserved set")
        return "PONG to a PING with flag 0x40 and reserved 0x1234"

    async def _fatal_frame(self, raw: bytes, what: str) -> str:
        s, p0, p1 = await self.two_paths()
        p1.send(raw)
        return await self.path_closed(p1, what, survivor=p0)

    async def unknown_type(self) -> str:
        return await self._fatal_frame(wire.encode(0x42, b"x"), "an unknown frame type without IGNORABLE")

    async def bad_fixed_length(self) -> str:
        return await self._fatal_frame(wire.encode(wire.ACK, b"\x00" * 8), "an ACK with an 8-byte body")

    async def oversized(self) -> str:
        return await self._fatal_frame(wire.encode(wire.DATA, b"\x00" * 8, length=0xFFFFFFF0), "a frame announcing 4 GiB")

    async def bad_crc(self) -> str:
        return await self._fatal_frame(wire.encode(wire.PING, b"\x00" * 8, bad_crc=True), "a frame failing its CRC-32C")

    async def ping_pong(self) -> str:
        s, p0, p1 = await self.two_paths()
        expect(await p0.ping() and await p1.ping(), "a PING went unanswered")
        return "each PING answered by a PONG with its token, on its own path"

    # --- §6 sending, §7 delivery -----------------------------------------

    async def acks(self) -> str:
        s = await self.open(1)
        p = s.paths[0]
        _, end = s.write(wire.H2_PREFACE)
        got = await p.until(lambda: p.last_ack()[0] >= end, PROMPT)
        expect(got, f"ACK path_received {p.last_ack()[0]} for {end} bytes sent")
        got = await p.until(lambda: p.last_ack()[1] >= end, PROMPT)
        expect(got, f"one live path, yet ACK delivered stays at {p.last_ack()[1]}")
        s.write(b"".join(wire.h2_ping(i) for i in range(5)))
        expect(await p.until(lambda: p.last_ack()[1] >= len(s.out), PROMPT), "later bytes not acknowledged")
        expect(not p.violations, "; ".join(p.violations))
        return f"ACKs up to ({len(s.out)}, {len(s.out)}) for {len(s.out)} bytes, never decreasing"

    async def duplicate_ack(self) -> str:
        s = await self.open(1)
        p = s.paths[0]
        _, end = s.write(wire.H2_PREFACE)
        expect(await p.until(lambda: p.last_ack()[1] >= end, PROMPT), "no ACK for the bytes sent")
        await asyncio.sleep(0.1)
        n = len(p.acks)
        p.data(0, wire.H2_PREFACE)  # a duplicate: the sender evidently missed an ACK
        got = await p.until(lambda: len(p.acks) > n, PROMPT)
        expect(got, "no ACK after a duplicate DATA frame")
        return f"a duplicate DATA frame was answered by ACK {p.last_ack()}"

    async def cookie_request(self) -> str:
        s = await self.open(1)
        p = s.paths[0]
        req = wire.resi_pb2.Control(cookie_request=wire.resi_pb2.CookieRequest(count=3))
        p.send(wire.encode(wire.CONTROL, req.SerializeToString()))
        got = await p.until(lambda: any(c.WhichOneof("msg") == "cookie_grant" for c in p.controls), PROMPT)
        expect(got, "no CookieGrant for a CookieRequest")
        grant = next(c.cookie_grant for c in p.controls if c.WhichOneof("msg") == "cookie_grant")
        expect(len(grant.cookies) == 3, f"asked for 3 cookies, granted {len(grant.cookies)}")
        old = s.cookies[0]
        p1, reply = await self.merge(s, 1, grant.cookies[0])
        expect(p1 is not None, f"a granted cookie does not merge: {reply}")
        p2, reply = await self.merge(s, 2, old)
        expect(p2 is not None, f"a cookie issued before the grant no longer merges: {reply}")
        return "CookieGrant of 3 cookies; a granted cookie merges, and so does one issued before the grant"

    async def peer_data_well_formed(self) -> str:
        s, p0, p1 = await self.two_paths()
        s.write(wire.H2_PREFACE + b"".join(wire.h2_ping(i) for i in range(20)))
        got = await p0.until(lambda: p0.received > 9 * 20 and p1.received >= p0.received, PROMPT)
        expect(got, f"peer sent {p0.received} / {p1.received} bytes on paths 0/1, expected PING ACKs for 20 PINGs")
        expect(not (p0.violations or p1.violations), "; ".join(p0.violations + p1.violations))
        expect(s.mismatches == 0, "the peer's two copies differ")
        return f"{p0.received} bytes on each path, contiguous from 0, identical copies, no frame over 64 KiB"

    async def resend_on_admission(self) -> str:
        s = await self.open(2, acks=False)  # the peer keeps every byte
        p0 = s.paths[0]
        s.write(wire.H2_PREFACE)
        expect(await p0.until(lambda: p0.received > 0, PROMPT), "no answer to the HTTP/2 preface")
        sent = p0.received
        p1, reply = await self.merge(s, 1)
        expect(p1 is not None, f"merge refused: {reply}")
        got = await p1.until(lambda: p1.received >= sent, PROMPT)
        expect(got, f"the admitted path got {p1.received} of the {sent} unacknowledged bytes")
        expect(p1.data_offsets[0][0] == 0, f"the admitted path started at {p1.data_offsets[0][0]}, not at acked = 0")
        return f"the admitted path starts at acked (0) and resends all {sent} unacknowledged bytes"

    async def strict_waits_for_every_path(self) -> str:
        return await retried(self._strict_waits)

    async def _strict_waits(self) -> str:
        s, p0, p1 = await self.two_paths(wire.STRICT)
        t0 = time.monotonic()
        _, end = s.write(wire.H2_PREFACE, [p0])
        expect(await p0.until(lambda: p0.last_ack()[0] >= end, PROMPT), "no ACK for the bytes on path 0")
        await asyncio.sleep(0.3)
        early = max(a[1] for a in p0.acks + p1.acks)
        if early and time.monotonic() - t0 > HOLD_WINDOW:
            raise Inconclusive(f"delivered after {time.monotonic() - t0:.1f} s, past the window")
        expect(early == 0, f"delivered {early} bytes that only path 0 carried, path 1 live")
        p1.data(0, wire.H2_PREFACE)
        got = await p1.until(lambda: p1.last_ack()[1] >= end, PROMPT)
        expect(got, f"after both copies ACK delivered is {p1.last_ack()[1]}")
        return f"delivered 0 while only path 0 carried the bytes, {end} once path 1 did"

    async def strict_drops_stalled_path(self) -> str:
        s, p0, p1 = await self.two_paths(wire.STRICT)
        _, end = s.write(wire.H2_PREFACE, [p0])
        t0 = time.monotonic()
        got = await p0.until(lambda: p0.last_ack()[1] >= end, 10)
        expect(got, "a path with heartbeats but no data held strict delivery for 10 s")
        return f"path 1 (heartbeats, no data) stopped holding delivery after {time.monotonic() - t0:.1f} s"

    async def strict_majority(self) -> str:
        s, p0, p1 = await self.two_paths(wire.STRICT)
        p2, reply = await self.merge(s, 2)
        expect(p2 is not None, f"merge of path 2 refused: {reply}")
        expect(await p2.ping(), "path 2 does not answer PING after its merge")
        _, end = s.write(wire.H2_PREFACE, [p0, p1])
        p2.data(0, self._altered())
        got = await p0.until(lambda: p2.closed.is_set() and p0.last_ack()[1] >= end, PROMPT)
        expect(got, f"path 2 closed: {p2.closed.is_set()}, delivered {p0.last_ack()[1]} of {end}")
        expect(not (p0.closed.is_set() or p1.closed.is_set()), "an agreeing path was closed")
        expect(wire.DATA_LOSS not in s.closes, "the session failed closed although two of three paths agreed")
        return "the odd path of three was closed, the majority's copy delivered, the session goes on"

    async def fin_ends_normally(self) -> str:
        s = await self.open(1)
        p = s.paths[0]
        _, end = s.write(wire.H2_PREFACE)
        expect(await p.until(lambda: p.last_ack()[1] >= end, PROMPT), "bytes not delivered")
        p.data(end, b"", fin=True)  # our side is closed; the HTTP/2 server then closes its own
        fin = lambda: any(f.kind == wire.DATA and f.fin for f in p.frames)  # noqa: E731
        expect(await p.until(fin, PROMPT), "no DATA with FIN from the peer after ours")
        got = await p.until(lambda: 0 in s.closes and p.closed.is_set(), PROMPT + 2)
        expect(got, f"after both FINs: Close codes {s.closes}, path closed {p.closed.is_set()}")
        return "the peer closed its side with FIN, then sent Close with code 0 and closed the path"

    async def permissive_first_copy(self) -> str:
        s, p0, p1 = await self.two_paths(wire.PERMISSIVE)
        _, end = s.write(wire.H2_PREFACE, [p0])
        got = await p0.until(lambda: p0.last_ack()[1] >= end, PROMPT)
        expect(got, f"permissive: ACK delivered {p0.last_ack()[1]} after the first copy of {end} bytes")
        return f"delivered {end} bytes on the first copy"

    def _altered(self) -> bytes:
        return wire.H2_PREFACE[:-9] + b"\x00\x00\x00\x04\x00\x00\x00\x00\x01"

    async def strict_altered_fails_closed(self) -> str:
        s, p0, p1 = await self.two_paths(wire.STRICT)
        _, end = s.write(wire.H2_PREFACE, [p0])
        p1.data(0, self._altered())
        got = await p0.until(lambda: wire.DATA_LOSS in s.closes and p0.closed.is_set() and p1.closed.is_set(), PROMPT)
        expect(got, f"Close codes seen {s.closes}, paths closed {p0.closed.is_set()}/{p1.closed.is_set()}")
        delivered = max(a[1] for a in p0.acks + p1.acks) if p0.acks + p1.acks else 0
        expect(delivered == 0, f"delivered {delivered} disputed bytes")
        return "Close DATA_LOSS on the paths, both closed, nothing delivered"

    async def permissive_altered_late(self) -> str:
        s, p0, p1 = await self.two_paths(wire.PERMISSIVE)
        _, end = s.write(wire.H2_PREFACE, [p0])
        expect(await p0.until(lambda: p0.last_ack()[1] >= end, PROMPT), "first copy not delivered")
        p1.data(0, self._altered())
        got = await p1.until(lambda: p1.last_ack()[0] >= end, PROMPT)
        expect(got, f"the late copy did not advance path 1 (path_received {p1.last_ack()[0]})")
        start, end2 = s.write(wire.h2_ping(7))
        got = await p0.until(lambda: p0.last_ack()[1] >= end2 and p0.received > 0, PROMPT)
        expect(got, "the session stopped delivering after the altered late copy")
        expect(not p0.closed.is_set() and not p1.closed.is_set(), "a path was closed")
        return "late altered copy dropped, path 1 advanced past it, the session goes on"

    # --- §8 liveness -----------------------------------------------------

    async def peer_heartbeats(self) -> str:
        s, p0, p1 = await self.two_paths()
        got = await p0.until(lambda: p0.pings >= 2 and p1.pings >= 2, PROMPT)
        expect(got, f"PINGs seen on paths 0/1: {p0.pings}/{p1.pings}")
        return f"{p0.pings} and {p1.pings} PINGs on paths 0 and 1"

    async def dead_timeout(self) -> str:
        s, p0, p1 = await self.two_paths()
        p1.keepalive = False
        p1.auto_pong = False
        t0 = time.monotonic()
        closed = await p1.wait_closed(10)
        expect(closed, "a silent path was still open after 10 s")
        took = time.monotonic() - t0
        expect(await p0.ping(), "the live path stopped answering")
        return f"the silent path was closed after {took:.1f} s; path 0 lives on"

    async def outage_of_every_path(self) -> str:
        s = await self.open(2, acks=False)
        p0 = s.paths[0]
        s.write(wire.H2_PREFACE)
        expect(await p0.until(lambda: p0.received > 0, PROMPT), "no answer to the HTTP/2 preface")
        sent = p0.received
        p0.abort()
        await asyncio.sleep(1.5)
        back, reply = await self.merge(s, 0)
        expect(back is not None, f"merge after an outage of every path refused: {reply}")
        got = await back.until(lambda: back.received >= sent, PROMPT)
        expect(got, f"after the outage the path got {back.received} of {sent} unacknowledged bytes")
        return f"rejoined after 1.5 s with no path; all {sent} unacknowledged bytes resent"

    async def close_ends_session(self) -> str:
        s, p0, p1 = await self.two_paths()
        s.close(0)
        got = await p0.until(lambda: p0.closed.is_set() and p1.closed.is_set(), PROMPT)
        expect(got, "paths still open after Close")
        path, reply = await self.hello(wire.merge_request(s.cookies[0], 2), None, "after close")
        expect(path is None and reply is not None and reply.code in (wire.UNAUTHENTICATED, wire.NOT_FOUND), f"merge after Close: {reply}")
        return f"both paths closed; a remaining cookie: {reply}"


#: (requirement, title, method, modes it applies to; None = both), in the
#: order of the specification (the checks are independent of each other).
CHECKS = [
    ("R-2-2", "a hop answers its own extension: hop information over the session", "call_crosses_session", None),
    ("R-3.1-1", "Open with another version is refused", "bad_version", None),
    ("R-3.1-2", "opened.mode is the stricter of request and acceptor", "mode_in_force", None),
    ("R-3.1-4", "Open over gRPC: 16-byte id, cookies clamped to 1..16", "open_over_grpc", None),
    ("R-3.1-6", "Open in a HELLO admits path 0 with one cookie more", "open_in_hello", None),
    ("R-3.1-9", "a restarted dialler's Open ends its earlier path-less session, not one with a live path", "restarted_dialler", None),
    ("R-3.2-1", "cookies have 128 bits or more and differ", "cookie_entropy", None),
    ("R-3.2-3", "a forged cookie is refused", "forged_cookie", None),
    ("R-3.2-3", "a cookie of an ended session is refused", "ended_session_cookie", None),
    ("R-3.2-4", "a reused cookie is refused", "reused_cookie", None),
    ("R-3.2-5", "an expired cookie is refused (and remembered)", "expired_cookie", None),
    ("R-3.3-1", "each merge returns a next_cookie that merges", "next_cookie_chain", None),
    ("R-3.3-2", "a cookie joins its own session", "another_sessions_cookie", None),
    ("R-3.3-3", "re-admission replaces the path's connection", "readmission", None),
    ("R-3.3-5", "a merge sent as a gRPC call is refused", "merge_over_grpc", None),
    ("R-5.1-1", "another frame format version is closed", "bad_preface", None),
    ("R-5.2-2", "unknown flag bits and reserved ignored", "flags_ignored", None),
    ("R-5.2-3", "unknown IGNORABLE frame skipped", "ignorable_unknown", None),
    ("R-5.2-4", "unknown type closes only that path", "unknown_type", None),
    ("R-5.2-4", "wrong fixed length closes only that path", "bad_fixed_length", None),
    ("R-5.2-4", "over the frame limit closes only that path", "oversized", None),
    ("R-5.2-5", "CRC-32C mismatch closes only that TCP path", "bad_crc", None),
    ("R-5.3-1", "a HELLO without open or merge is refused", "hello_without_redundancy", None),
    ("R-5.5-1", "ACKs cumulative and never decreasing", "acks", None),
    ("R-5.5-2", "PING answered with PONG on its path", "ping_pong", None),
    ("R-5.6-1", "CookieRequest answered by a CookieGrant; grants revoke nothing", "cookie_request", None),
    ("R-5.6-2", "Close ends the session and revokes its cookies", "close_ends_session", None),
    ("R-6-2", "every byte on every live path, <= 64 KiB a frame", "peer_data_well_formed", None),
    ("R-6-5", "FIN both ways ends the session with Close 0", "fin_ends_normally", None),
    ("R-6-6", "a duplicate DATA frame is answered by an ACK", "duplicate_ack", None),
    ("R-7-2", "permissive: the first copy is delivered", "permissive_first_copy", {wire.PERMISSIVE}),
    ("R-7-3", "strict: delivery waits for every live path", "strict_waits_for_every_path", None),
    ("R-7-4", "permissive: an altered late copy is dropped, its path advances", "permissive_altered_late", {wire.PERMISSIVE}),
    ("R-7-5", "strict: an altered copy fails the session closed", "strict_altered_fails_closed", None),
    ("R-7-6", "strict, three paths: the odd copy's path is closed", "strict_majority", None),
    ("R-8.1-1", "PINGs on every live path", "peer_heartbeats", None),
    ("R-8.1-2", "a silent path is closed after the dead timeout", "dead_timeout", None),
    ("R-8.1-3", "strict: a path with no data stops holding delivery", "strict_drops_stalled_path", None),
    ("R-8.3-3", "a re-admitted path resends from acked", "resend_on_admission", None),
    ("R-8.4-1", "the session survives an outage of every path", "outage_of_every_path", None),
]
