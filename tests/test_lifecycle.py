"""The lifecycle as a new user meets it: errors that are real Python
classes with attributes, a redundant client that refuses a peer that is
not an end gateway, closed clients and dead sessions that fail at once and
say why, a stop that does not wait for nothing, and event streams that end.
Loopback only, bounded waits."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import socket
import time

import pytest

import resi
import resi.errors
import resi.nkn
from resi.testing import FAST_TIMERS, EsiNode

pytestmark = pytest.mark.timeout(60)

ECHO = "/resi.test.Echo"


def test_exceptions_are_defined_in_python_source() -> None:
    source = inspect.getsource(resi.errors)
    assert resi.errors.__file__.endswith("errors.py")
    for name in ("ResiError", "ConfigError", "CallError", "SessionError", "NotEndGatewayError", "BindError", "StatusCode"):
        cls = getattr(resi, name)
        assert cls is getattr(resi.errors, name)
        assert f"\nclass {name}(" in source
    assert issubclass(resi.NotEndGatewayError, resi.SessionError)
    assert issubclass(resi.BindError, OSError) and issubclass(resi.BindError, resi.ResiError)


def test_config_error_has_origin_and_key() -> None:
    with pytest.raises(resi.ConfigError) as e:
        resi.Gateway(listen="127.0.0.1:0", address="127.0.0.1:1", dead_timeout="soon")
    assert e.value.origin == "<keyword arguments>"
    assert e.value.key == "[Resi] DeadTimeout"
    assert str(e.value).startswith("<keyword arguments>: [Resi] DeadTimeout: ")

    with pytest.raises(resi.ConfigError) as e:
        resi.Gateway.from_dict({"Tcp": {"Listen": "127.0.0.1:0", "Address": "127.0.0.1:1"}, "Resi": {"Mode": "lax"}}, "my.toml")
    assert (e.value.origin, e.value.key) == ("my.toml", "[Resi] Mode")

    with pytest.raises(resi.ConfigError) as e:
        resi.Gateway.from_file("/nonexistent/gateway.toml")
    assert (e.value.origin, e.value.key) == ("/nonexistent/gateway.toml", None)


async def test_bind_error_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        gw = resi.Gateway(listen=addr, address="127.0.0.1:1")
        with pytest.raises(OSError) as e:
            await gw.start()
    assert isinstance(e.value, resi.BindError)
    assert e.value.errno == errno.EADDRINUSE
    assert e.value.address == addr and addr in str(e.value)
    assert not gw.running


async def test_connect_redundant_refuses_a_plain_server(esi_node: EsiNode) -> None:
    start = time.monotonic()
    with pytest.raises(resi.NotEndGatewayError) as e:
        await resi.Client.connect_redundant([esi_node.address, esi_node.address], connect_timeout="2s")
    assert e.value.address == esi_node.address
    assert "not a resi end gateway" in str(e.value) and "allow_plain" in str(e.value)
    assert time.monotonic() - start < 5
    # Asked to allow it: plain gRPC, calls work.
    async with await resi.Client.connect_redundant([esi_node.address], allow_plain=True) as client:
        assert client.upstream_kind == "plain"
        assert await client.unary(f"{ECHO}/Unary", b"p", timeout=5) == b"p"


async def _failed_call(client: resi.Client, timeout: float, within: float) -> resi.CallError:
    """The error of a unary call that must fail within ``within`` seconds."""
    start = time.monotonic()
    with pytest.raises(resi.CallError) as e:
        await client.unary(f"{ECHO}/Unary", b"doomed", timeout=timeout)
    took = time.monotonic() - start
    assert took < within, f"the call failed only after {took:.1f}s: {e.value}"
    return e.value


async def test_a_call_on_a_closed_client_fails_at_once(resi_pair) -> None:
    pair = await resi_pair(paths=2)
    assert await pair.client.unary(f"{ECHO}/Unary", b"a", timeout=5) == b"a"
    await pair.client.close()
    err = await _failed_call(pair.client, timeout=10, within=0.5)
    assert err.code == resi.StatusCode.UNAVAILABLE
    assert "closed" in err.details


async def test_a_call_with_no_live_path_says_so(resi_pair) -> None:
    pair = await resi_pair(mode="permissive", paths=2)
    await pair.wait_paths(2)
    # Killed (not black-holed): redials are refused outright, so no merge
    # cookie is spent on a connection that only delivers after the heal.
    pair.kill(0)
    pair.kill(1)
    await pair.wait_paths(0)
    err = await _failed_call(pair.client, timeout=1.5, within=5)
    assert err.code == resi.StatusCode.DEADLINE_EXCEEDED
    assert "no live path" in err.details
    # Paths back: calls work again on the same session.
    pair.heal(0)
    pair.heal(1)
    await pair.wait_paths(2, timeout=15)
    assert await pair.client.unary(f"{ECHO}/Unary", b"y", timeout=5) == b"y"


async def test_stop_does_not_wait_the_grace_for_a_session_without_paths(esi_node: EsiNode) -> None:
    pair = await resi.testing.start_pair(esi_node.address, mode="permissive", paths=2, shutdown_grace="10s")
    try:
        assert await pair.client.unary(f"{ECHO}/Unary", b"s", timeout=5) == b"s"
        pair.blackhole(0)
        pair.blackhole(1)
        await pair.wait_paths(0)
        deadline = time.monotonic() + 10
        while any(p.state == "up" for s in await pair.end.session_stats() for p in s.paths):
            assert time.monotonic() < deadline, "the end gateway never saw its paths die"
            await asyncio.sleep(0.05)
        start = time.monotonic()
        await asyncio.wait_for(pair.end.stop(), 15)
        took = time.monotonic() - start
        assert took < 4, f"stop() took {took:.1f}s with no call in flight (ShutdownGrace is 10s)"
    finally:
        await pair.close()


async def test_events_have_timestamps_a_closed_event_and_end(resi_pair) -> None:
    pair = await resi_pair(mode="permissive", paths=2)
    await pair.wait_paths(2)
    events = pair.client.events()
    end_events = pair.end.events()
    before = time.time()
    pair.kill(0)
    got: list[resi.Event] = []

    async def until_kind(stream: resi.EventStream, kind: str) -> resi.Event:
        async for ev in stream:
            got.append(ev)
            if ev.kind == kind:
                return ev
        raise AssertionError(f"stream ended before {kind}: {got}")

    down = await asyncio.wait_for(until_kind(events, "path_down"), 10)
    assert down.path == 0 and before - 1 <= down.timestamp <= time.time()

    await pair.client.close()

    async def rest(stream: resi.EventStream) -> list[resi.Event]:
        return [ev async for ev in stream]

    tail = await asyncio.wait_for(rest(events), 10)
    assert tail and tail[-1].kind == "session_closed", tail
    assert tail[-1].reason and tail[-1].session_id == down.session_id

    # The end gateway's stream ends when it stops, after its sessions closed.
    await pair.end.stop()
    end_tail = await asyncio.wait_for(rest(end_events), 10)
    assert end_tail and end_tail[-1].kind == "session_closed", end_tail


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


async def test_every_configured_path_is_in_the_stats(esi_node: EsiNode) -> None:
    dead = _closed_port()
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_node.address, name="end", **FAST_TIMERS) as end:
        paths = [end.address, dead]
        async with await resi.Client.connect_redundant(paths, connect_timeout="1s", **FAST_TIMERS) as client:
            deadline = time.monotonic() + 10
            while True:
                stats = await client.stats()
                by_id = {p.path: p for p in stats.paths}
                if 1 in by_id and by_id[1].reason and "dial failed" in by_id[1].reason:
                    break
                assert time.monotonic() < deadline, stats.paths
                await asyncio.sleep(0.05)
            up, down = by_id[0], by_id[1]
            assert (up.state, up.transport, up.address, up.reason) == ("up", "tcp", end.address, None)
            assert (down.state, down.transport, down.address) == ("down", "tcp", dead)
            assert down.as_dict()["reason"] == down.reason


async def test_an_nkn_path_that_cannot_reach_its_seeds(esi_node: EsiNode, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="resi")
    resi.refresh_logging()
    mine, peer = resi.nkn.generate_identity(), resi.nkn.generate_identity()
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_node.address, name="end", **FAST_TIMERS) as end:
        gw = resi.Gateway(
            listen="127.0.0.1:0",
            address=end.address,
            nkn_seed=mine.seed,
            nkn_address=peer.address,
            nkn_rpc_servers=["http://" + _closed_port()],
            connect_timeout="1s",
            name="client",
            **FAST_TIMERS,
        )
        async with gw:
            deadline = time.monotonic() + 15
            while not any("cannot reach the seed nodes" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                await asyncio.sleep(0.05)
            warning = next(r for r in caplog.records if "cannot reach the seed nodes" in r.getMessage())
            assert warning.levelno == logging.WARNING
            assert not any("joined NKN" in r.getMessage() for r in caplog.records)
            while True:
                stats = await gw.upstream_stats()
                nkn = [p for p in (stats.paths if stats else []) if p.transport == "nkn"]
                if nkn:
                    break
                assert time.monotonic() < deadline, stats
                await asyncio.sleep(0.05)
            assert nkn[0].address == peer.address and nkn[0].state == "down" and nkn[0].reason
            # The TCP path carries the calls meanwhile.
            async with await resi.Client.connect(gw.address) as c:
                assert await c.unary(f"{ECHO}/Unary", b"n", timeout=5) == b"n"


async def test_a_repeated_warning_is_written_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    # An upstream that refuses every connection: each redial (50 ms
    # backoff, doubling to 2 s) fails the same way.
    caplog.set_level(logging.INFO, logger="resi")
    resi.refresh_logging()
    dead = _closed_port()
    async with resi.Gateway(listen="127.0.0.1:0", address=dead, connect_timeout="1s", name="lonely") as gw:
        text = f"cannot connect upstream: {dead}"
        deadline = time.monotonic() + 15
        while not any(text in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # 50+100+200+400+800 ms: five more attempts at least
        assert gw.upstream_kind is None
    assert resi.flush_logging()
    same = [r for r in caplog.records if text in r.getMessage()]
    assert len(same) == 1, [r.getMessage() for r in same]
    assert same[0].levelno == logging.WARNING
