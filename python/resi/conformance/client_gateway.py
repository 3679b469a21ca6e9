"""The suite as a scripted end gateway (the acceptor), with its own ESI
server behind it, in front of a client gateway (the dialler) under test.

The suite listens on one address per path (``--listen``; the target's
upstream ``[Tcp] Address`` must list them, the first one first). Like a
RESI listener it tells HTTP/2 from RESI paths by the first bytes (§5.1):
HTTP/2 connections (the target's discovery probe, §4) go to the suite's
own gRPC server, which answers the redundancy Open; RESI paths are merged
into the session their cookie names. The session's byte stream is carried
to and from that same gRPC server, so a call made to the target arrives
there over the session.

The checks run in order against the one target, each building on what the
target did before (its probe, its merges, its session).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Optional

import grpc

from . import wire
from .report import HOLD_WINDOW, Inconclusive, expect, retried
from .session import Path, Session

PROMPT = 3.0
#: How long a dialler may take to redial a lost path (§8.3: backoff from
#: 50 ms, capped at 2 s by default), with room for a loaded machine.
REDIAL = 8.0
ECHO = "/resi.conformance.Echo/Echo"


class Accepted(Session):
    """A session the suite accepted."""

    def __init__(self, mode: int, ttl_ms: int, registry: dict[bytes, "Accepted"]):
        super().__init__()
        self.registry = registry  # every live cookie of the acceptor -> its session
        self.mode, self.cookie_ttl_ms = mode, ttl_ms
        self.issued: set[bytes] = set()
        self.merges: list[tuple[int, bytes]] = []  # (path_id, cookie) as presented
        self.pump: Optional[asyncio.Task] = None

    def new_cookie(self) -> bytes:
        c = os.urandom(24)
        self.issued.add(c)
        self.registry[c] = self
        return c

    def on_control(self, path: Path, msg) -> None:
        super().on_control(path, msg)
        if msg.WhichOneof("msg") == "cookie_request":
            n = max(1, min(16, msg.cookie_request.count))
            grant = wire.resi_pb2.Control(cookie_grant=wire.resi_pb2.CookieGrant(cookies=[self.new_cookie() for _ in range(n)], cookie_ttl_ms=self.cookie_ttl_ms))
            path.send(wire.encode(wire.CONTROL, grant.SerializeToString()))


class Acceptor:
    def __init__(self, listen: list[tuple[str, int]], target: tuple[str, int], mode: int, cookie_ttl_ms: int = 60_000):
        self.listen, self.target, self.mode, self.ttl = listen, target, mode, cookie_ttl_ms
        self.sessions: list[Accepted] = []
        self.by_cookie: dict[bytes, Accepted] = {}
        self.presented: list[bytes] = []
        self.probes: list[wire.esi_pb2.ModifyRequest] = []
        self.plain_connections = 0
        self.hello_versions: list[bytes] = []
        self.refuse_next_merge: Optional[tuple[int, str]] = None
        #: Answer the next Open PERMISSIVE whatever was asked (a faulty
        #: acceptor, for R-3.1-3).
        self.answer_permissive_once = False
        self.echoes = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._grpc: Optional[grpc.aio.Server] = None
        self._grpc_port = 0
        self._changed = asyncio.Event()

    # --- serving ---------------------------------------------------------

    async def start(self) -> None:
        self._grpc = grpc.aio.server()
        handlers = {
            "Modify": grpc.unary_unary_rpc_method_handler(self._modify),
        }
        echo = {"Echo": grpc.unary_unary_rpc_method_handler(self._echo)}
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("esi.Esi", handlers), grpc.method_handlers_generic_handler("resi.conformance.Echo", echo)))
        self._grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        await self._grpc.start()
        for host, port in self.listen:
            self._servers.append(await asyncio.start_server(self._on_conn, host, port))

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for s in self.sessions:
            s.close()
        await asyncio.sleep(0.05)
        for s in self.sessions:
            s.stop()
            if s.pump:
                s.pump.cancel()
        if self._grpc:
            await self._grpc.stop(0)

    async def reset(self) -> None:
        """Between checks: nothing to undo (the checks share the target)."""

    async def _echo(self, request: bytes, context) -> bytes:
        self.echoes += 1
        return request

    async def _modify(self, request: bytes, context) -> bytes:
        req = wire.esi_pb2.ModifyRequest.FromString(request)
        self.probes.append(req)
        self._changed.set()
        if req.ext.id != wire.REDUNDANCY:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"extension {req.ext.id} is not implemented at this hop (pass=false)")
        red = wire.resi_pb2.Redundancy.FromString(req.ext.data)
        if red.WhichOneof("msg") != "open":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected Redundancy.open")
        o = red.open
        mode = wire.STRICT if wire.STRICT in (o.mode or wire.STRICT, self.mode) else wire.PERMISSIVE
        if self.answer_permissive_once:
            self.answer_permissive_once, mode = False, wire.PERMISSIVE
        s = Accepted(mode, self.ttl, self.by_cookie)
        s.session_id = os.urandom(16)
        cookies = [s.new_cookie() for _ in range(max(1, min(16, o.cookies)))]
        self.sessions.append(s)
        opened = wire.resi_pb2.OpenResponse(version=1, session_id=s.session_id, cookies=cookies, cookie_ttl_ms=self.ttl, mode=mode)
        rsp = wire.esi_pb2.ModifyResponse(ext=wire.esi_pb2.Extension(id=wire.REDUNDANCY, data=wire.resi_pb2.Redundancy(opened=opened).SerializeToString()))
        return rsp.SerializeToString()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readexactly(4), 5)
            if head == b"PRI ":
                self.plain_connections += 1
                await self._pipe_to_grpc(head, reader, writer)
            elif head == b"RESI":
                await self._accept_path(head + await asyncio.wait_for(reader.readexactly(4), 5), reader, writer)
            else:
                writer.close()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, wire.WireError):
            writer.close()
        except asyncio.CancelledError:
            # The run is over (the loop cancels what is left): end quietly.
            writer.close()

    async def _pipe_to_grpc(self, head: bytes, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self._grpc_port)
        up_w.write(head)

        async def copy(r, w):
            try:
                while chunk := await r.read(65536):
                    w.write(chunk)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(copy(reader, up_w), copy(up_r, writer))

    async def _accept_path(self, preface: bytes, reader, writer) -> None:
        self.hello_versions.append(preface)
        if preface != wire.PREFACE:
            writer.close()
            return
        decoder = wire.Decoder()
        frames: list[wire.Frame] = []
        while not frames:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                writer.close()
                return
            frames = decoder.feed(chunk)
        hello = frames[0]
        req = wire.esi_pb2.ModifyRequest.FromString(hello.body)
        red = wire.resi_pb2.Redundancy.FromString(req.ext.data)
        if hello.kind != wire.HELLO or red.WhichOneof("msg") != "merge":
            writer.write(wire.encode(wire.HELLO_REPLY, wire.hello_reply_body(code=wire.INVALID_ARGUMENT, message="HELLO must carry merge")))
            writer.close()
            return
        m = red.merge
        self.presented.append(m.cookie)
        s = self.by_cookie.pop(m.cookie, None)
        refusal = self.refuse_next_merge
        if refusal is not None:
            self.refuse_next_merge = None
        elif s is None:
            refusal = (wire.UNAUTHENTICATED, "unknown merge cookie")
        if s is not None:
            s.merges.append((m.path_id, m.cookie))
        if refusal is not None:
            writer.write(wire.encode(wire.HELLO_REPLY, wire.hello_reply_body(code=refusal[0], message=refusal[1])))
            writer.close()
            self._changed.set()
            return
        nxt = s.new_cookie()
        merged = wire.resi_pb2.MergeResponse(path_id=m.path_id, next_cookie=nxt, cookie_ttl_ms=self.ttl)
        writer.write(wire.encode(wire.HELLO_REPLY, wire.hello_reply_body(wire.resi_pb2.Redundancy(merged=merged))))
        old = s.paths.get(m.path_id)
        if old is not None:
            old.stop()
        path = Path(reader, writer, f"path {m.path_id}", s)
        path._handle(frames[1:])
        path._handle(path.decoder.feed(bytes(decoder.buf)))
        s.paths[m.path_id] = path
        if len(s.out) > s.acked:
            path.data(s.acked, bytes(s.out[s.acked :]))  # re-admission resends (§6)
        if s.pump is None:
            s.pump = asyncio.ensure_future(self._pump(s))
        self._changed.set()

    async def _pump(self, s: Accepted) -> None:
        """Carries the session's stream to and from the suite's gRPC server."""
        r, w = await asyncio.open_connection("127.0.0.1", self._grpc_port)
        s._sink = w
        w.write(bytes(s.inbound))
        while chunk := await r.read(65536):
            s.write(chunk)

    # --- helpers ---------------------------------------------------------

    async def until(self, cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() >= deadline:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
        return True

    def current(self) -> Accepted:
        expect(bool(self.sessions), "the target never opened a session (no RESI probe arrived)")
        return self.sessions[-1]

    async def all_paths(self, timeout: float = REDIAL) -> Accepted:
        got = await self.until(lambda: bool(self.sessions) and len(self.sessions[-1].live()) >= len(self.listen), timeout)
        s = self.current()
        expect(got, f"{len(s.live())} of {len(self.listen)} paths live")
        return s

    async def call(self, payload: bytes = b"conformance") -> bytes:
        async with grpc.aio.insecure_channel(f"{self.target[0]}:{self.target[1]}") as ch:
            return await ch.unary_unary(ECHO)(payload, timeout=PROMPT * 2)

    async def quiet_paths(self) -> tuple[Accepted, list[Path]]:
        """The session with every path up, after a call, once its HTTP/2
        connection is quiet: HTTP/2 frames the suite adds to the stream
        then fall between the server's own."""
        s = await self.all_paths()
        await self.call()
        await asyncio.sleep(0.3)
        return s, [p for _, p in sorted(s.paths.items()) if not p.closed.is_set()]

    async def redial_after(self, s: Accepted, path_id: int, before: int) -> str:
        got = await self.until(lambda: len(s.merges) > before and path_id in s.paths and not s.paths[path_id].closed.is_set(), REDIAL)
        expect(got, f"path {path_id} was not redialled within {REDIAL:.0f} s")
        cookie = s.merges[-1][1]
        expect(self.presented.count(cookie) == 1, "the redial presented a cookie already presented")
        return f"path {path_id} redialled with a fresh cookie"

    # --- checks ------------------------------------------------------------

    async def probe(self) -> str:
        got = await self.until(lambda: bool(self.probes), 15)
        expect(got, "no Modify probe within 15 s: is the target's upstream [Tcp] Address the suite's --listen?")
        p = self.probes[0]
        red = wire.resi_pb2.Redundancy.FromString(p.ext.data)
        expect(p.ext.id == wire.REDUNDANCY, f"probe carries extension {p.ext.id}")
        expect(not getattr(p.ext, "pass"), "the redundancy probe is sent with pass = true")
        expect(red.WhichOneof("msg") == "open", f"probe carries {red.WhichOneof('msg')}")
        expect(red.open.version == 1, f"Open version {red.open.version}")
        want = {self.mode} if self.mode == wire.PERMISSIVE else {wire.STRICT, wire.UNSPECIFIED}
        expect(red.open.mode in want, f"the target asks for {wire.MODE_NAMES.get(red.open.mode)}, configured {wire.MODE_NAMES[self.mode]}")
        return f"Modify ext 1 pass=false open(version 1, mode {wire.MODE_NAMES[red.open.mode]}, cookies {red.open.cookies})"

    async def merges_every_path(self) -> str:
        s = await self.all_paths(15)
        ids = sorted(pid for pid, _ in s.merges)
        expect(len(set(ids)) == len(ids) == len(self.listen), f"path ids merged: {ids}")
        expect(all(v == wire.PREFACE for v in self.hello_versions), f"prefaces {self.hello_versions}")
        return f"paths {ids} merged, each with its own cookie, preface RESI\\r\\n 00 02"

    async def call_crosses(self) -> str:
        s = await self.all_paths()
        before = len(s.inbound)
        got = await self.call(b"across the session")
        expect(got == b"across the session", f"echo answered {got!r}")
        expect(len(s.inbound) > before and self.echoes >= 1, "the call did not come over the session")
        expect(self.plain_connections == len(self.probes), f"{self.plain_connections} plain HTTP/2 connections for {len(self.probes)} probes: calls bypass the session")
        return f"echo call answered over the session ({len(s.inbound) - before} bytes from the target)"

    async def pongs(self) -> str:
        s = await self.all_paths()
        for p in s.live():
            expect(await p.ping(), f"{p.name} does not answer PING")
        return "every path answers PING with its token"

    async def heartbeats(self) -> str:
        s = await self.all_paths()
        base = {p.name: p.pings for p in s.live()}
        got = await self.until(lambda: all(p.pings >= base[p.name] + 2 for p in s.live()), PROMPT)
        expect(got, f"PINGs seen: {[(p.name, p.pings - base[p.name]) for p in s.live()]}")
        return "PINGs arrive on every live path"

    async def acks(self) -> str:
        s = await self.all_paths()
        await self.call()
        end = len(s.out)
        got = await self.until(lambda: all(p.last_ack()[0] >= end and p.last_ack()[1] >= end for p in s.live()), PROMPT)
        expect(got, f"ACKs {[p.last_ack() for p in s.live()]} for {end} bytes sent")
        bad = [v for p in s.paths.values() for v in p.violations]
        expect(not bad, "; ".join(bad))
        return f"every path acknowledged all {end} bytes (path_received and delivered), never decreasing"

    async def ignorable(self) -> str:
        s = await self.all_paths()
        p = s.live()[0]
        p.send(wire.encode(0x42, b"skip", wire.FLAG_IGNORABLE))
        expect(await p.ping(), "no PONG after an unknown IGNORABLE frame")
        return "skipped; the path still answers PING"

    async def unknown_type(self) -> str:
        s = await self.all_paths()
        pid, p = sorted(s.paths.items())[-1]
        before = len(s.merges)
        p.send(wire.encode(0x42, b"fatal"))
        expect(await p.wait_closed(PROMPT), "path still open after an unknown frame type")
        return "path closed; " + await self.redial_after(s, pid, before)

    async def strict_hold(self) -> str:
        return await retried(self._strict_hold)

    async def _strict_hold(self) -> str:
        s, paths = await self.quiet_paths()
        first, others = paths[0], paths[1:]
        t0 = time.monotonic()
        start, end = s.write(wire.h2_ping(0x5E55), [first])
        expect(await first.until(lambda: first.last_ack()[0] >= end, PROMPT), "no ACK for the bytes on one path")
        await asyncio.sleep(0.3)
        early = first.last_ack()[1]
        for p in others:
            p.data(start, wire.h2_ping(0x5E55))
        if early >= end and time.monotonic() - t0 > HOLD_WINDOW:
            raise Inconclusive(f"delivered after {time.monotonic() - t0:.1f} s, past the window")
        expect(early < end, f"delivered {early} >= {end}: bytes only one of {len(paths)} live paths carried")
        got = await first.until(lambda: first.last_ack()[1] >= end, PROMPT)
        expect(got, f"after every path carried them, delivered is {first.last_ack()[1]}")
        return "not delivered while one path carried the bytes; delivered once all did"

    async def permissive_first(self) -> str:
        s, paths = await self.quiet_paths()
        start, end = s.write(wire.h2_ping(0x9E55), [paths[0]])
        got = await paths[0].until(lambda: paths[0].last_ack()[1] >= end, PROMPT)
        expect(got, f"permissive: delivered {paths[0].last_ack()[1]} of {end} after the first copy")
        bad = bytearray(wire.h2_ping(0x9E55))
        bad[-1] ^= 0xFF
        for p in paths[1:]:
            p.data(start, bytes(bad))
        got = await paths[-1].until(lambda: paths[-1].last_ack()[0] >= end, PROMPT)
        expect(got, "the altered late copy was not acknowledged on its path")
        expect(await self.call() == b"conformance", "calls fail after an altered late copy")
        return "first copy delivered at once; an altered late copy dropped, calls go on"

    async def dead_timeout(self) -> str:
        s = await self.all_paths()
        pid, p = sorted(s.paths.items())[-1]
        before = len(s.merges)
        p.keepalive = p.auto_pong = p.send_acks = False
        t0 = time.monotonic()
        expect(await p.wait_closed(10), "a silent path was still open after 10 s")
        took = time.monotonic() - t0
        return f"silent path closed after {took:.1f} s; " + await self.redial_after(s, pid, before)

    async def used_cookie_discarded(self) -> str:
        s = await self.all_paths()
        pid, p = sorted(s.paths.items())[-1]
        self.refuse_next_merge = (wire.PERMISSION_DENIED, "merge cookie already used")
        n = len(self.presented)
        p.abort()
        got = await self.until(lambda: len(self.presented) >= n + 2 and pid in s.paths and not s.paths[pid].closed.is_set(), REDIAL)
        expect(got, f"after a refused merge the path did not come back within {REDIAL:.0f} s")
        refused, next_ = self.presented[n], self.presented[n + 1]
        expect(refused != next_, "the cookie refused as used was presented again")
        return "a merge refused as used: the target discarded that cookie and merged with another"

    async def outage(self) -> str:
        s = await self.all_paths()
        for p in s.live():
            p.abort()
        await asyncio.sleep(0.5)
        got = await self.until(lambda: len(s.live()) >= len(self.listen), REDIAL)
        expect(got, f"after an outage of every path, {len(s.live())} paths came back within {REDIAL:.0f} s")
        expect(self.current() is s, "the target opened a new session instead of rejoining")
        expect(await self.call() == b"conformance", "calls fail after the outage")
        return "every path rejoined the same session; calls go on"

    async def close_ends(self) -> str:
        s = await self.all_paths()
        n = len(self.sessions)
        paths = s.live()
        s.close(0)
        got = await self.until(lambda: all(p.closed.is_set() for p in paths), PROMPT)
        expect(got, "paths still open after Close")
        got = await self.until(lambda: len(self.sessions) > n, REDIAL)
        expect(got, "no new Open after the session ended")
        await self.all_paths()
        expect(await self.call() == b"conformance", "calls fail on the new session")
        return "the target closed every path, opened a new session and calls go on"

    async def weaker_answer_ignored(self) -> str:
        s = await self.all_paths()
        n = len(self.sessions)
        self.answer_permissive_once = True
        s.close(0)
        got = await self.until(lambda: len(self.sessions) > n, REDIAL)
        expect(got, "no new Open after the session ended")
        expect(self.current().mode == wire.PERMISSIVE, "the suite did not answer PERMISSIVE")
        seen = await retried(self._strict_hold)
        return f"opened.mode PERMISSIVE answered to a strict target, which still ran strict: {seen}"

    async def dialler_identity(self) -> str:
        # After R-5.6-2 the target has opened at least twice, all in one
        # run (run alone, this check waits for two Opens): every Open
        # names it alike.
        def seen() -> list:
            messages = [wire.resi_pb2.Redundancy.FromString(p.ext.data) for p in self.probes if p.ext.id == wire.REDUNDANCY]
            return [m.open for m in messages if m.WhichOneof("msg") == "open"]

        await self.until(lambda: len(seen()) >= 2, REDIAL)
        opens = seen()
        expect(len(opens) >= 2, f"{len(opens)} Open(s) seen within {REDIAL:.0f} s; two are needed")
        for o in opens:
            expect(len(o.dialler.encode()) <= 256, f"dialler of {len(o.dialler.encode())} bytes (at most 256)")
            expect(len(o.instance) in (0, 16), f"instance of {len(o.instance)} bytes (empty or 16)")
        named = [o for o in opens if o.dialler and o.instance]
        if not named:
            return f"{len(opens)} anonymous Opens (no dialler and instance): allowed, though the target SHOULD send both"
        expect(len(named) == len(opens), f"{len(named)} of {len(opens)} Opens name the dialler, the others do not")
        expect(len({o.instance for o in opens}) == 1, f"{len({o.instance for o in opens})} instances in {len(opens)} Opens of one run")
        expect(len({o.dialler for o in opens}) == 1, f"dialler names {sorted({o.dialler for o in opens})} in one run")
        return f"dialler {named[0].dialler!r} and one 16-byte instance in all {len(opens)} Opens"

    async def strict_altered(self) -> str:
        s, paths = await self.quiet_paths()
        bad = bytearray(wire.h2_ping(0xBAD))
        bad[-1] ^= 0xFF
        start, end = s.write(wire.h2_ping(0xBAD), [paths[0]])
        for p in paths[1:]:
            p.data(start, bytes(bad))
        got = await self.until(lambda: all(p.closed.is_set() for p in paths), PROMPT)
        expect(got, "the session did not fail closed on two differing copies")
        codes = [c for p in paths for c in p.close_codes()]
        expect(wire.DATA_LOSS in codes, f"Close codes seen: {codes}")
        return "Close DATA_LOSS, every path closed"


CHECKS = [
    ("R-4-1", "discovery probe: Modify ext 1 pass=false open", "probe", None),
    ("R-3.3-9", "one merge per configured path, own cookie and path id", "merges_every_path", None),
    ("R-2-5", "calls are forwarded over the session", "call_crosses", None),
    ("R-5.5-2", "PING answered with PONG on its path", "pongs", None),
    ("R-8.1-1", "PINGs on every live path", "heartbeats", None),
    ("R-5.5-1", "ACKs cumulative, path_received and delivered", "acks", None),
    ("R-5.2-3", "unknown IGNORABLE frame skipped", "ignorable", None),
    ("R-5.2-4", "unknown type closes the path; it is redialled", "unknown_type", None),
    ("R-7-3", "strict: delivery waits for every live path", "strict_hold", {wire.STRICT}),
    ("R-7-2", "permissive: first copy wins, altered late copy dropped", "permissive_first", {wire.PERMISSIVE}),
    ("R-8.1-2", "a silent path is closed and redialled", "dead_timeout", None),
    ("R-8.3-2", "a cookie refused as used is discarded", "used_cookie_discarded", None),
    ("R-8.3-1", "outage of every path: every path redialled, same session", "outage", None),
    ("R-5.6-2", "Close ends the session; the target opens anew", "close_ends", None),
    ("R-3.1-3", "strict: a weaker opened.mode does not weaken the target", "weaker_answer_ignored", {wire.STRICT}),
    ("R-7-5", "strict: an altered copy fails the session closed", "strict_altered", {wire.STRICT}),
    ("R-3.1-8", "every Open of one run names the dialler alike", "dialler_identity", None),
]
