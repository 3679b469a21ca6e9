"""The asyncio API (``import resi``): gateways, calls, extension handlers,
statistics and events, logging, stubs and the pytest plugin.

grpcio is the independent peer: ``EsiServer`` (grpc_helpers) and the
plugin's ``esi_node`` are grpcio servers, and grpcio clients check what a
gateway started from Python forwards.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

import resi
from grpc_helpers import SERVER_EXT, SERVICE, EsiServer, channel, check_all_shapes, modify
from resi.testing import ECHO_SERVICE, NODE_EXTENSION, EsiNode

ECHO = f"/{ECHO_SERVICE}"
HERE = Path(__file__).resolve().parent
FAST = resi.testing.FAST_TIMERS


def refused(addr: str) -> bool:
    host, port = addr.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


async def eventually(check, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------
# 1. Gateways from Python


async def test_gateway_from_kwargs_forwards_all_shapes_to_grpcio(esi_server: EsiServer):
    gw = resi.Gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, heartbeat_interval="100ms")
    assert not gw.running and gw.addresses == []
    async with gw:
        assert gw.running
        assert len(gw.addresses) == 2 and all(not a.endswith(":0") for a in gw.addresses)
        await asyncio.to_thread(check_all_shapes, gw.address)
        assert gw.upstream_kind == "plain"
    assert not gw.running and refused(gw.address if gw.addresses else "127.0.0.1:1")


async def test_gateway_from_file_and_dict(tmp_path: Path, esi_server: EsiServer):
    path = tmp_path / "gw.toml"
    # The original file's capitalisation.
    path.write_text(f'[Tcp]\nListen = "127.0.0.1:0"\nAddress = "{esi_server.addr}"\n[Resi]\nMode = "permissive"\nName = "filegw"\n')
    gw = resi.Gateway.from_file(path)
    table = {"tcp": {"listen": "127.0.0.1:0", "address": esi_server.addr}, "Resi": {"name": "dictgw"}}
    gw2 = resi.Gateway.from_dict(table)
    async with gw, gw2:
        assert gw.name == "filegw" and gw2.name == "dictgw"
        for g in (gw, gw2):
            assert modify(g.address, SERVER_EXT, True, b"x") == (SERVER_EXT, True, b"server:x")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "fast"}, '[Resi] Mode: expected "strict" or "permissive", got "fast"'),
        ({"heartbeat_intervall": "1s"}, "did you mean HeartbeatInterval?"),
        ({"dead_timeout": "abc"}, '[Resi] DeadTimeout: expected a duration such as "250ms"'),
        ({"listen": 5}, "[Tcp] Listen"),
    ],
)
def test_config_errors_match_the_file(tmp_path: Path, kwargs, message):
    full = {"listen": "127.0.0.1:0", "address": "127.0.0.1:9", **kwargs}
    with pytest.raises(resi.ConfigError) as info:
        resi.Gateway(**full)
    assert str(info.value).startswith("<keyword arguments>: ") and message in str(info.value)
    assert isinstance(info.value, resi.ResiError)
    # The same problem in a file names the file instead.
    if "mode" in kwargs:
        path = tmp_path / "bad.toml"
        path.write_text('[Tcp]\nListen = "127.0.0.1:0"\nAddress = "127.0.0.1:9"\n[Resi]\nMode = "fast"\n')
        with pytest.raises(resi.ConfigError) as info2:
            resi.Gateway.from_file(path)
        assert str(info2.value) == f"{path}: {message}"


def test_bind_failure_is_a_resi_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        addr = "%s:%d" % s.getsockname()

        async def main():
            gw = resi.Gateway(listen=addr, address="127.0.0.1:9")
            with pytest.raises(resi.ResiError, match="cannot listen"):
                await gw.start()

        asyncio.run(main())


def test_many_gateways_one_loop_and_clean_stop(esi_server: EsiServer):
    """Several gateways and clients in one loop; after stop no port is open,
    no asyncio task is left and the loop closes cleanly."""
    threads_before = set(threading.enumerate())
    closed: list[str] = []

    async def main():
        gws = [resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr, name=f"g{i}") for i in range(3)]
        for g in gws:
            await g.start()
        clients = [await resi.Client.connect(g.address) for g in gws]
        replies = await asyncio.gather(*(c.unary(f"/{SERVICE}/Unary", b"x", timeout=10) for c in clients))
        assert replies == [b"echo:x"] * 3
        for c in clients:
            await c.close()
        for g in gws:
            closed.append(g.address)
            await g.stop()
            await g.stop()  # twice is harmless
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(main())
    assert all(refused(a) for a in closed)
    # No Python thread was left behind (the tokio runtime's workers are not
    # Python threads and are shared by the module).
    assert set(threading.enumerate()) <= threads_before | {t for t in threading.enumerate() if t.daemon}


# ---------------------------------------------------------------------------
# 2. ESI calls from asyncio


async def test_plain_client_all_shapes_metadata_and_errors(esi_server: EsiServer):
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr) as gw:
        async with await resi.Client.connect(gw.address) as c:
            assert c.upstream_kind == "plain"
            md = [("x-req", "v"), ("x-req-bin", b"\x00\xff")]
            assert await c.unary(f"/{SERVICE}/Unary", b"hi", metadata=md, timeout=10) == b"echo:hi"
            assert [m async for m in c.server_stream(f"/{SERVICE}/ServerStream", b"s")] == [b"s/0", b"s/1", b"s/2"]
            assert await c.client_stream(f"/{SERVICE}/ClientStream", [b"a", b"bb"]) == b"a|bb"

            async def gen():
                for m in (b"1", b"2", b"3"):
                    yield m

            assert [m async for m in c.bidi(f"/{SERVICE}/Bidi", gen())] == [b"re:1", b"re:2", b"re:3"]
            big = bytes(range(256)) * 4096
            assert await c.unary(f"/{SERVICE}/Unary", big) == b"echo:" + big

            # Low-level call: response headers and trailers.
            call = c.call(f"/{SERVICE}/Unary", b"m", metadata=md)
            assert await call.receive() == b"echo:m"
            assert await call.receive() is None
            headers = dict(await call.initial_metadata())
            assert headers["echo-x-req"] == "v" and headers["echo-x-req-bin"] == b"\x00\xff"
            assert dict(call.trailing_metadata() or [])["x-trailer-bin"] == b"\x00\x01\xfe\xff"

            # Failures in every shape: code, details, trailers.
            fail = [("x-fail", "NOT_FOUND")]
            attempts = [
                c.unary(f"/{SERVICE}/Unary", b"u", metadata=fail),
                _drain(c.server_stream(f"/{SERVICE}/ServerStream", b"s", metadata=fail)),
                c.client_stream(f"/{SERVICE}/ClientStream", [b"c"], metadata=fail),
                _drain(c.bidi(f"/{SERVICE}/Bidi", [b"b"], metadata=fail)),
            ]
            for attempt in attempts:
                with pytest.raises(resi.CallError) as info:
                    await attempt
                e = info.value
                assert e.code == resi.StatusCode.NOT_FOUND and e.details.endswith(" ü"), e
                assert dict(e.trailers)["x-trailer"] == "t-value"
                assert dict(e.trailers)["x-trailer-bin"] == b"\x00\x01\xfe\xff"
            with pytest.raises(resi.CallError) as info:
                await c.unary(f"/{SERVICE}/NoSuchMethod", b"")
            assert info.value.code == resi.StatusCode.UNIMPLEMENTED


async def _drain(it) -> list[bytes]:
    return [m async for m in it]


async def test_connect_failure_is_a_session_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = "%s:%d" % s.getsockname()  # bound, not listening: refused
    with pytest.raises(resi.SessionError):
        await resi.Client.connect(addr, connect_timeout=1)
    with pytest.raises(resi.SessionError):
        await resi.Client.connect_redundant([addr, addr], connect_timeout="1s")


@pytest.mark.parametrize("mode", ["strict", "permissive"])
async def test_redundant_client_straight_to_end_gateway(esi_server: EsiServer, mode: str):
    async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=esi_server.addr, mode=mode, **FAST) as end:
        async with await resi.Client.connect_redundant(end.addresses, mode=mode, **FAST) as c:
            assert c.upstream_kind == "resi"
            assert await c.unary(f"/{SERVICE}/Unary", b"r") == b"echo:r"
            assert await _drain(c.server_stream(f"/{SERVICE}/ServerStream", b"s")) == [b"s/0", b"s/1", b"s/2"]
            assert await c.client_stream(f"/{SERVICE}/ClientStream", [b"a", b"b"]) == b"a|b"
            assert await _drain(c.bidi(f"/{SERVICE}/Bidi", [b"1"])) == [b"re:1"]
            stats = await c.stats()
            assert stats.mode == mode and len(stats.paths) == 2
            assert [s.session_id for s in await end.session_stats()] == [stats.session_id]


async def test_timeout_is_sent_and_enforced(esi_node: EsiNode):
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_node.address) as gw:
        async with await resi.Client.connect(gw.address) as c:
            t0 = time.monotonic()
            with pytest.raises(resi.CallError) as info:
                await c.unary(f"{ECHO}/Wait", b"5000", timeout=0.3)
            assert info.value.code == resi.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - t0 < 2.5
            # The server learnt it too (grpc-timeout or the reset).
            await eventually(lambda: _ready(esi_node.cancelled >= 1), what="server-side cancellation")


async def _ready(v: bool) -> bool:
    return v


@pytest.mark.parametrize("redundant", [False, True], ids=["plain", "redundant"])
async def test_cancelling_the_task_cancels_the_call_at_the_server(esi_node: EsiNode, redundant: bool):
    async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=esi_node.address, **FAST) as gw:
        if redundant:
            c = await resi.Client.connect_redundant(gw.addresses, **FAST)
        else:
            c = await resi.Client.connect(gw.address)
        async with c:
            task = asyncio.create_task(c.unary(f"{ECHO}/Wait", b"20000"))
            assert await asyncio.to_thread(esi_node.waiting.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await eventually(lambda: _ready(esi_node.cancelled >= 1), what="server-side cancellation")
            # The client still works.
            assert await c.unary(f"{ECHO}/Unary", b"after") == b"after"


async def test_hundreds_of_concurrent_calls_do_not_serialise(esi_server: EsiServer):
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr) as gw:

        async def slow(data: bytes) -> bytes:
            await asyncio.sleep(0.3)
            return data

        gw.register(900, slow)
        async with await resi.Client.connect(gw.address) as c:
            t0 = time.monotonic()
            replies = await asyncio.gather(*(c.modify(900, b"%d" % i, timeout=20) for i in range(300)))
            elapsed = time.monotonic() - t0
            assert replies == [b"%d" % i for i in range(300)]
            assert elapsed < 5, f"300 calls of 0.3 s took {elapsed:.1f}s"


def test_calls_from_successive_loops_on_one_thread(esi_server: EsiServer):
    """Each asyncio loop gets its own batch of started calls (and its own
    driver on the runtime): bursts of calls work in a loop, in the next
    loop on the same thread, and with some cancelled in the middle."""

    async def burst(n: int) -> None:
        async with await resi.Client.connect(esi_server.addr) as c:
            calls = [asyncio.ensure_future(c.unary(f"/{SERVICE}/Unary", b"%d" % i, timeout=20)) for i in range(n)]
            cancelled = calls[::7]
            for t in cancelled:
                t.cancel()
            done = await asyncio.gather(*calls, return_exceptions=True)
            for i, reply in enumerate(done):
                if calls[i] in cancelled:
                    assert isinstance(reply, asyncio.CancelledError)
                else:
                    assert reply == b"echo:%d" % i
            # The client still works after the cancellations.
            assert await c.unary(f"/{SERVICE}/Unary", b"after", timeout=20) == b"echo:after"

    for _ in range(3):
        asyncio.run(burst(200))


def _resi_in_subprocess(threads: str, code: str) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "RESI_THREADS": threads}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


WORKERS = """
import asyncio, pathlib, time, resi
async def main():
    try:
        await resi.Client.connect("127.0.0.1:9", connect_timeout=0.5)
    except resi.SessionError:
        pass
asyncio.run(main())
# A thread takes its name once it first runs: on a busy machine, wait for it.
deadline = time.monotonic() + 10
while True:
    names = [p.read_text().strip() for p in pathlib.Path("/proc/self/task").glob("*/comm")]
    if names.count("resi-worker") >= EXPECTED or time.monotonic() > deadline:
        break
    time.sleep(0.01)
print(names.count("resi-worker"))
"""


@pytest.mark.parametrize("threads", ["1", "3"])
def test_resi_threads_sets_the_runtime_workers(threads: str):
    run = _resi_in_subprocess(threads, WORKERS.replace("EXPECTED", threads))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == threads


@pytest.mark.parametrize("bad", ["0", "many", "1025"])
def test_a_bad_resi_threads_fails_the_import_naming_it(bad: str):
    run = _resi_in_subprocess(bad, "import resi")
    assert run.returncode != 0
    assert "ValueError" in run.stderr and f'RESI_THREADS: "{bad}"' in run.stderr, run.stderr


# ---------------------------------------------------------------------------
# 3. Extensions in Python


async def test_extension_handlers_on_a_gateway(esi_server: EsiServer):
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr) as gw:
        seen: list[bytes] = []

        @gw.extension(700)
        async def handler(data: bytes) -> bytes:
            seen.append(data)
            await asyncio.sleep(0)
            return b"py:" + data

        async def broken(data: bytes) -> bytes:
            raise ValueError("bad input")

        async def refusing(data: bytes) -> bytes:
            raise resi.CallError(resi.StatusCode.PERMISSION_DENIED, "not you")

        gw.register(701, broken)
        gw.register(702, refusing)
        gw.register(703, lambda data: bytes(reversed(data)))  # a plain function works too

        # grpcio through the gateway: the handler's bytes reach the caller.
        assert await asyncio.to_thread(modify, gw.address, 700, False, b"d") == (700, False, b"py:d")
        assert seen == [b"d"]
        with pytest.raises(grpc.RpcError) as info:
            await asyncio.to_thread(modify, gw.address, 701, False, b"d")
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert "ValueError: bad input" in info.value.details()
        async with await resi.Client.connect(gw.address) as c:
            with pytest.raises(resi.CallError) as info2:
                await c.modify(702, b"")
            assert info2.value.code == resi.StatusCode.PERMISSION_DENIED and info2.value.details == "not you"
            assert await c.modify(703, b"abc") == b"cba"
            # pass rules: unknown id, pass=false -> this hop refuses; pass=true -> forwarded.
            with pytest.raises(resi.CallError) as info3:
                await c.modify(4343, b"")
            assert info3.value.code == resi.StatusCode.UNIMPLEMENTED and "4343" in info3.value.details
            assert await c.modify(SERVER_EXT, b"x", pass_=True) == b"server:x"
            assert gw.unregister(700)
            with pytest.raises(resi.CallError):
                await c.modify(700, b"")
        # The gateway survived its handlers' failures.
        await asyncio.to_thread(check_all_shapes, gw.address)


async def test_extension_handlers_on_a_redundant_client(esi_node: EsiNode):
    async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=esi_node.address, **FAST) as end:

        async def at_end(data: bytes) -> bytes:
            return b"end:" + data

        end.register(800, at_end)
        async with await resi.Client.connect_redundant(end.addresses, **FAST) as c:

            async def local(data: bytes) -> bytes:
                return b"local:" + data

            c.register(801, local)
            assert await c.modify(801, b"a") == b"local:a"
            # The client is a hop: pass=false stops at it, pass=true goes on.
            with pytest.raises(resi.CallError) as info:
                await c.modify(800, b"a")
            assert info.value.code == resi.StatusCode.UNIMPLEMENTED
            assert await c.modify(800, b"a", pass_=True) == b"end:a"
            assert await c.modify(NODE_EXTENSION, b"a", pass_=True) == b"node:a"
            assert c.unregister(801) and not c.unregister(801)


# ---------------------------------------------------------------------------
# 4. Watching the paths


async def test_stats_and_events_when_a_path_dies_and_returns(resi_pair):
    pair = await resi_pair(mode="strict", paths=2)
    events = pair.client.events()
    end_events = pair.end.events()
    for i in range(20):
        assert await pair.client.unary(f"{ECHO}/Unary", b"%d" % i) == b"%d" % i
    stats = await pair.client.stats()
    assert [p.state for p in stats.paths] == ["up", "up"]
    for p in stats.paths:
        assert p.bytes_sent > 0 and p.bytes_received > 0 and p.frames_sent > 0 and p.frames_received > 0
        assert p.rtt is not None and p.rtt >= 0
        assert p.retransmitted_bytes >= 0 and p.mismatches == 0
        assert p.as_dict()["path"] == p.path
    # Every delivered byte came first on some path and as a copy on the other.
    assert sum(p.first_bytes for p in stats.paths) > 0
    assert sum(p.duplicate_bytes for p in stats.paths) > 0

    pair.kill(1)
    down = await asyncio.wait_for(_next_kind(events, "path_down"), 10)
    assert down.path == 1 and down.reason
    await pair.wait_paths(1)
    # Strict mode does not wait for the dead path.
    assert await pair.client.unary(f"{ECHO}/Unary", b"one path", timeout=5) == b"one path"
    pair.heal(1)
    up = await asyncio.wait_for(_next_kind(events, "path_up"), 15)
    assert up.path == 1 and up.readmitted is True
    await pair.wait_paths(2)
    after = await pair.client.stats()
    assert after.paths[1].admissions >= 2
    # The end gateway saw its accepted session's paths go and come back too.
    assert (await asyncio.wait_for(_next_kind(end_events, "path_down"), 10)).path == 1
    events.close()
    end_events.close()
    assert [e async for e in events] == []


async def _next_kind(stream: resi.EventStream, kind: str) -> resi.Event:
    async for ev in stream:
        if ev.kind == kind:
            return ev
    raise AssertionError("event stream ended")


@pytest.mark.parametrize("mode", ["strict", "permissive"])
async def test_a_corrupting_path_is_caught_and_blamed(resi_pair, mode):
    pair = await resi_pair(mode=mode, paths=2)
    events = pair.client.events()
    pair.corrupt(1, share=0.0005)
    assert pair.relays[1].state == "corrupt"
    bodies = [bytes([i]) * (500 + 37 * i) for i in range(100)]
    for body in bodies:
        assert await pair.client.unary(f"{ECHO}/Unary", body, timeout=10) == body
    ev = await asyncio.wait_for(_next_kind(events, "corrupt_frame"), 10)
    assert ev.path == 1
    stats = await pair.client.stats()
    end = await pair.end.session_stats()
    counted = {p.path: p.corrupt_frames for s in [stats, *end] for p in s.paths}
    assert sum(p.corrupt_frames for s in [stats, *end] for p in s.paths if p.path == 1) > 0, counted
    assert sum(p.corrupt_frames for s in [stats, *end] for p in s.paths if p.path == 0) == 0, counted
    assert "corrupt_frames" in stats.paths[0].as_dict()
    pair.heal(1)
    with pytest.raises(ValueError, match="direction"):
        pair.relays[1].corrupt(0.1, "sideways")
    with pytest.raises(ValueError, match="share"):
        pair.relays[1].tamper(1.5)


async def test_a_tampering_path_makes_strict_calls_fail_with_data_loss(resi_pair):
    """Copies that pass the frame check but differ (an altering party that
    recomputes the CRC): while both paths are live the strict session never
    delivers an altered copy; it fails closed and the in-process client's
    call ends DATA_LOSS. (Once the session has failed, its successor may run
    on the altering path alone before the other merges: strict mode with one
    live path cannot compare, protocol section 10.3, so the test stops at the
    first failure.)"""
    pair = await resi_pair(mode="strict", paths=2)
    await pair.wait_paths(2)
    pair.relays[1].tamper(0.3)
    assert pair.relays[1].state == "tamper"
    failure = None
    for i in range(200):
        body = bytes([i % 256]) * 3000
        try:
            reply = await pair.client.unary(f"{ECHO}/Unary", body, timeout=5)
        except resi.CallError as e:
            failure = e
            break
        assert reply == body, f"call {i}: an altered copy was delivered"
    assert failure is not None, "200 calls through a tampering path and no failure"
    assert failure.code == resi.StatusCode.DATA_LOSS, failure
    assert "copies disagreed" in failure.details, failure
    pair.heal(1)


async def test_blackholed_path_in_permissive_mode(resi_pair):
    pair = await resi_pair(mode="permissive", paths=3)
    # connect_redundant returns once one path joined: black-holing path 2
    # before it joined would leave nothing to go down.
    await pair.wait_paths(3)
    events = pair.client.events()
    pair.blackhole(2)
    for i in range(5):
        assert await pair.client.unary(f"{ECHO}/Unary", b"x", timeout=5) == b"x"
    ev = await asyncio.wait_for(_next_kind(events, "path_down"), 10)
    assert ev.path == 2
    pair.heal(2)
    await pair.wait_paths(3, timeout=15)


async def test_gateway_pair_stats_from_the_client_gateway(esi_server: EsiServer):
    """Two gateways from Python: the client gateway reports its upstream
    session; grpcio calls cross the pair."""
    async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=esi_server.addr, name="end", **FAST) as end:
        async with resi.Gateway(listen="127.0.0.1:0", address=end.addresses, name="client", **FAST) as cgw:
            await asyncio.to_thread(check_all_shapes, cgw.address)
            assert cgw.upstream_kind == "resi"
            up = await cgw.upstream_stats()
            assert up is not None and len(up.paths) == 2
            assert [s.session_id for s in await end.session_stats()] == [up.session_id]
            assert await end.upstream_stats() is None


# ---------------------------------------------------------------------------
# 5. Ecosystem manners


async def test_rust_logs_reach_python_logging(caplog, esi_server: EsiServer):
    caplog.set_level(logging.INFO, logger="resi")
    resi.refresh_logging()
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr, name="logged"):
        pass
    assert resi.flush_logging()
    names = {r.name for r in caplog.records}
    assert any(n == "resi.gateway" or n.startswith("resi.gateway.") for n in names), names
    assert any("gateway started" in r.getMessage() for r in caplog.records)


def test_stubs_match_the_compiled_module():
    allow = HERE / "stubtest_allowlist.txt"
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "resi._resi", "--allowlist", str(allow)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_is_typed():
    root = Path(resi.__file__).parent
    assert (root / "py.typed").exists() and (root / "_resi.pyi").exists()
    for name in resi.__all__:
        assert getattr(resi, name) is not None
    assert resi.Gateway.__doc__ and resi.Client.unary.__doc__ and resi.FaultRelay.__doc__
    assert issubclass(resi.CallError, resi.ResiError) and issubclass(resi.ConfigError, resi.ResiError)
    assert issubclass(resi.SessionError, resi.ResiError)
    e = resi.CallError(5, "gone", [("k", "v")])
    assert e.code is resi.StatusCode.NOT_FOUND and e.details == "gone" and e.trailers == [("k", "v")]


# ---------------------------------------------------------------------------
# 6. The pytest plugin and the fault relay


def test_plugin_is_registered_through_its_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("resi")
    assert plugin is not None and plugin.__name__ == "resi.pytest_plugin"


async def test_plugin_fixtures(resi_pair, resi_gateway, esi_node):
    pair = await resi_pair(mode="permissive", paths=2)
    assert pair.upstream == esi_node.address
    assert await pair.client.modify(NODE_EXTENSION, b"q", pass_=True) == b"node:q"
    with pytest.raises(resi.CallError) as info:
        await pair.client.unary(f"{ECHO}/Fail", b"ABORTED")
    assert info.value.code == resi.StatusCode.ABORTED and dict(info.value.trailers)["x-node"] == "failed"
    gw = await resi_gateway(listen="127.0.0.1:0", address=esi_node.address)
    assert modify(gw.address, NODE_EXTENSION, True, b"z") == (NODE_EXTENSION, True, b"node:z")


@pytest.mark.parametrize("named", [True, False])
async def test_a_named_redundant_client_frees_the_path_less_session_of_its_predecessor(esi_server: EsiServer, named: bool):
    """connect_redundant(name=...) names its Opens: a new client of that name
    ends at once the session an earlier one left with no live path (its
    Close never arrived); an anonymous client's old session is kept."""
    async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=esi_server.addr, name="end", **FAST) as end:
        relays = [resi.FaultRelay(a) for a in end.addresses]
        paths = [r.address for r in relays]
        kw = {"name": "exchange-7"} if named else {}
        try:
            old = await resi.Client.connect_redundant(paths, **kw, **FAST)
            assert await old.unary(f"/{SERVICE}/Unary", b"old") == b"echo:old"
            old_id = (await old.stats()).session_id
            for r in relays:
                r.kill()  # every path closes, and the Close of close() cannot arrive
            await old.close()
            for r in relays:
                r.heal()
            async with await resi.Client.connect_redundant(paths, **kw, **FAST) as new:
                assert await new.unary(f"/{SERVICE}/Unary", b"new") == b"echo:new"
                new_id = (await new.stats()).session_id

                async def held() -> list[str]:
                    return sorted(s.session_id for s in await end.session_stats())

                async def freed() -> bool:
                    return await held() == [new_id]

                if named:
                    await eventually(freed, timeout=2, what="the old session freed")
                else:
                    await asyncio.sleep(1)
                    assert await held() == sorted([old_id, new_id]), "an anonymous client's session was ended"
        finally:
            for r in relays:
                r.close()


async def test_fault_relay_from_python(esi_server: EsiServer):
    relay = resi.FaultRelay(esi_server.addr)
    assert relay.state == "pass" and relay.target == esi_server.addr
    with channel(relay.address) as ch:
        assert ch.unary_unary(f"/{SERVICE}/Unary")(b"a", timeout=5) == b"echo:a"
    relay.kill()
    assert relay.state == "killed"
    with pytest.raises(grpc.RpcError), channel(relay.address) as ch:
        ch.unary_unary(f"/{SERVICE}/Unary")(b"a", timeout=2)
    relay.heal()
    with channel(relay.address) as ch:
        assert ch.unary_unary(f"/{SERVICE}/Unary")(b"b", timeout=5) == b"echo:b"
    relay.close()


async def test_an_upstream_whose_modify_echoes_every_extension_is_plain_esi(caplog):
    """The RESI probe answered with anything but a valid `opened` (here an
    ESI server whose `Modify` echoes every extension, RESI's included) means
    a plain ESI upstream: forwarding works, with one warning naming it."""
    node = EsiNode().start()
    node.extensions[1] = lambda data: data  # echoes the Open back: not an `opened`
    try:
        with caplog.at_level(logging.WARNING, logger="resi"):
            async with resi.Gateway(listen="127.0.0.1:0", address=node.address, name="odd-probe") as gw:
                async with await resi.Client.connect(gw.address) as client:
                    for i in range(3):
                        reply = await client.unary(f"/{ECHO_SERVICE}/Unary", b"x%d" % i, timeout=5)
                        assert reply == b"x%d" % i
            assert resi.flush_logging()
        warnings = [r for r in caplog.records if "without a valid `opened`" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        assert node.address in warnings[0].getMessage()
    finally:
        node.stop()
