"""The fault tool: each fault of ``resi.FaultRelay`` (a TCP path) and of
the local NKN node (a message path), with its effect on the wire measured
from outside: an echo server behind a relay, a gateway pair's own path
counters, NKN clients on the local node. Loopback only, bounded waits."""

from __future__ import annotations

import asyncio
import time

import pytest

import resi
from resi.nkn import LocalNode, NknClient

pytestmark = pytest.mark.timeout(60)

ECHO = "/resi.test.Echo"


async def _echo_server() -> tuple[asyncio.AbstractServer, str]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _open(addr: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = addr.rsplit(":", 1)
    return await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)


async def _echo_time(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes, timeout: float = 10) -> float:
    start = time.monotonic()
    w.write(data)
    await w.drain()
    assert await asyncio.wait_for(r.readexactly(len(data)), timeout) == data
    return time.monotonic() - start


async def test_delay_and_jitter_hold_every_chunk_in_order() -> None:
    server, addr = await _echo_server()
    relay = resi.FaultRelay(addr)
    try:
        r, w = await _open(relay.address)
        assert await _echo_time(r, w, b"warm") < 1.0
        relay.delay(0.1, jitter=0.1)
        assert relay.latency == (pytest.approx(0.1), pytest.approx(0.1))
        # Each direction waits 0.1 s plus up to 0.1 s: a round trip 0.2-0.4 s.
        times = [await _echo_time(r, w, b"msg%d" % i) for i in range(5)]
        assert min(times) >= 0.19, times
        assert max(times) < 2.0, times
        # Pipelined chunks keep their order whatever their jitter.
        burst = b"".join(b"<%03d>" % i for i in range(50))
        for i in range(50):
            w.write(b"<%03d>" % i)
            await w.drain()
        assert await asyncio.wait_for(r.readexactly(len(burst)), 10) == burst
        relay.heal()
        assert relay.latency == (0.0, 0.0)
        assert await _echo_time(r, w, b"fast") < 0.15
        w.close()
    finally:
        relay.close()
        server.close()


async def test_bandwidth_limit_paces_the_bytes() -> None:
    server, addr = await _echo_server()
    relay = resi.FaultRelay(addr)
    try:
        r, w = await _open(relay.address)
        relay.bandwidth(40_000)
        assert relay.rate == 40_000
        # 40 kB at 40 kB/s each way (pipelined): about a second, not instant.
        took = await _echo_time(r, w, bytes(range(256)) * 156, timeout=20)
        assert 0.8 <= took < 10, took
        relay.bandwidth(None)
        assert relay.rate is None
        assert await _echo_time(r, w, b"x" * 40_000) < 0.5
        with pytest.raises(ValueError):
            relay.bandwidth(0)
        w.close()
    finally:
        relay.close()
        server.close()


async def test_delay_shows_in_the_paths_rtt(resi_pair) -> None:
    pair = await resi_pair(mode="permissive", paths=2)
    await pair.wait_paths(2)
    pair.delay(0, 0.15)
    deadline = time.monotonic() + 15
    while True:
        stats = await pair.client.stats()
        rtt = {p.path: p.rtt for p in stats.paths}
        if rtt.get(0) and rtt[0] >= 0.25:
            break
        assert time.monotonic() < deadline, f"path 0 RTT never showed the delay: {rtt}"
        await asyncio.sleep(0.1)
    # The other path is not delayed, and calls go on.
    assert rtt[1] is not None and rtt[1] < 0.1
    assert await pair.client.unary(f"{ECHO}/Unary", b"d", timeout=5) == b"d"


async def test_flap_takes_a_path_down_and_up_by_itself(resi_pair) -> None:
    pair = await resi_pair(mode="permissive", paths=2)
    await pair.wait_paths(2)
    events = pair.client.events()
    pair.flap(0, up=0.5, down=1.0, for_=3.2)
    assert pair.relays[0].flapping
    seen: list[tuple[str, float]] = []

    async def watch() -> None:
        async for ev in events:
            if ev.path == 0 and ev.kind in ("path_down", "path_up"):
                seen.append((ev.kind, ev.timestamp))

    watcher = asyncio.ensure_future(watch())
    try:
        # Calls succeed all along (the other path carries them).
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            assert await pair.client.unary(f"{ECHO}/Unary", b"f", timeout=5) == b"f"
            await asyncio.sleep(0.05)
        # The schedule ends by itself, relaying.
        deadline = time.monotonic() + 5
        while pair.relays[0].flapping:
            assert time.monotonic() < deadline, "flap did not end"
            await asyncio.sleep(0.05)
        assert pair.relays[0].state == "pass"
        await pair.wait_paths(2, timeout=15)
    finally:
        watcher.cancel()
    kinds = [k for k, _ in seen]
    assert kinds.count("path_down") >= 2, seen
    assert "path_up" in kinds, seen
    assert [t for _, t in seen] == sorted(t for _, t in seen)


def test_flap_arguments_are_checked() -> None:
    relay = resi.FaultRelay("127.0.0.1:9")
    try:
        for bad in [dict(up=0, down=1, for_=1), dict(up=1, down=-1, for_=1), dict(up=1, down=1, for_=1, how="drop")]:
            with pytest.raises(ValueError):
                relay.flap(**bad)
        with pytest.raises(ValueError):
            relay.delay(-0.1)
        assert not relay.flapping
    finally:
        relay.close()


async def _nkn_pair(node: LocalNode) -> tuple[NknClient, NknClient]:
    a = NknClient(identifier="a", subclients=1, rpc_servers=[node.rpc_url])
    b = NknClient(identifier="b", subclients=1, rpc_servers=[node.rpc_url])
    await a.wait_ready(timeout=15)
    await b.wait_ready(timeout=15)
    return a, b


async def test_local_node_reorders_duplicates_and_delays() -> None:
    async with LocalNode() as node:
        a, b = await _nkn_pair(node)
        try:
            # Reorder: each message is held back until the next one passes it.
            node.set_faults(reorder=1.0)
            for m in (b"m1", b"m2"):
                await a.send(b.address, m)
            got = [(await b.recv(timeout=10)).data for _ in range(2)]
            assert got == [b"m2", b"m1"]
            assert node.stats()["reordered"] >= 1

            # Duplicate: the node relays every message twice (the client
            # drops the copy: it sees each message once).
            node.set_faults(duplicate=1.0)
            before = node.stats()["relayed"]
            await a.send(b.address, b"twice")
            assert (await b.recv(timeout=10)).data == b"twice"
            deadline = time.monotonic() + 5
            while node.stats()["relayed"] - before < 2:
                assert time.monotonic() < deadline, node.stats()
                await asyncio.sleep(0.02)
            assert node.stats()["duplicated"] >= 1

            # Delay: a message arrives no sooner than the delay.
            node.set_faults(delay=0.3, jitter=0.1)
            assert node.faults() == {"duplicate": 0.0, "reorder": 0.0, "delay": 0.3, "jitter": pytest.approx(0.1)}
            start = time.monotonic()
            await a.send(b.address, b"late")
            assert (await b.recv(timeout=10)).data == b"late"
            assert time.monotonic() - start >= 0.29
            assert node.stats()["delayed"] >= 1

            node.set_faults()
            start = time.monotonic()
            await a.send(b.address, b"now")
            assert (await b.recv(timeout=10)).data == b"now"
            assert time.monotonic() - start < 0.25
            with pytest.raises(ValueError):
                node.set_faults(duplicate=1.5)
        finally:
            a.close()
            b.close()
