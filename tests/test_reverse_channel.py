"""Calls in both directions over one gateway pair (the reverse channel).

A grpcio server behind each gateway: the "exchange" behind the client
gateway (``[Reverse] Address``), the "facility" behind the end gateway.
grpcio clients call the facility through the client gateway's listener and
the exchange through the end gateway's ``[Reverse] Listen``; two TCP paths
run through fault relays. Through ``resi gateway`` processes (both modes, a
path killed while calls run both ways) and through the Python API
(``Gateway(reverse_listen=...)``, ``Client.connect_redundant(reverse_address=...)``).
"""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent import futures

import grpc
import pytest

import resi as resi_api
from conftest import ResiFactory, gateway_config, run_resi
from faultrelay import FaultRelay
from grpc_helpers import SERVICE, EsiServer, channel, check_all_shapes, load

FAST = 'HeartbeatInterval = "100ms"\nDeadTimeout = "500ms"\nRedialMaxBackoff = "300ms"\nConnectTimeout = "3s"\n'
REVERSE_LINE = r"^resi: reverse listening on (\S+)\s*$"


@pytest.fixture
def exchange():
    """The server behind the client gateway (the facility's is ``esi_server``)."""
    s = EsiServer()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def facility(esi_server: EsiServer) -> EsiServer:
    return esi_server


@pytest.mark.session
@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_gateway_processes_carry_calls_both_ways_through_a_path_cut(
    resi: ResiFactory, exchange: EsiServer, facility: EsiServer, mode: str
):
    end = resi.start(
        gateway_config(
            listen=["127.0.0.1:0", "127.0.0.1:0"],
            address=facility.addr,
            mode=mode,
            name="end",
            extra=FAST + '[Reverse]\nListen = "127.0.0.1:0"\n',
        ),
        name="end",
    )
    end_addrs = end.wait_listening(2)
    reverse = re.match(REVERSE_LINE, end.wait_for_line(REVERSE_LINE)).group(1)
    with FaultRelay(end_addrs[0], "path0") as r0, FaultRelay(end_addrs[1], "path1") as r1:
        client = resi.gateway(
            listen="127.0.0.1:0",
            address=[r0.addr, r1.addr],
            mode=mode,
            name="client",
            extra=FAST + f'[Reverse]\nAddress = "{exchange.addr}"\n',
        )
        forward = client.addrs[0]
        # Every shape, both directions at once.
        with futures.ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(check_all_shapes, forward), pool.submit(check_all_shapes, reverse)]:
                f.result(timeout=60)
        # Each direction reached its own server.
        assert exchange.calls > 0 and facility.calls > 0
        calls0 = (exchange.calls, facility.calls)
        assert r0.connections >= 1 and r1.connections >= 1

        # Kill a path while calls run both ways.
        n = 200
        faulted = threading.Event()
        done = [0, 0]

        def progress(i: int):
            def cb(d: int) -> None:
                done[i] = d
                if min(done) >= n // 4 and not faulted.is_set():
                    faulted.set()
                    r0.kill()

            return cb

        with futures.ThreadPoolExecutor(2) as pool:
            fwd = pool.submit(load, forward, n, b"fwd", progress(0))
            rev = pool.submit(load, reverse, n, b"rev", progress(1))
            assert fwd.result(timeout=60) == [b"echo:fwd-%d" % i for i in range(n)]
            assert rev.result(timeout=60) == [b"echo:rev-%d" % i for i in range(n)]
        assert faulted.is_set()
        # None lost, none repeated: each server saw each call once.
        assert (exchange.calls, facility.calls) == (calls0[0] + n, calls0[1] + n)

        # Healed, both paths carry both directions again (calls go on
        # until the redialled path has rejoined and carried some).
        r0.heal()
        before = (r0.bytes_forwarded, r1.bytes_forwarded)
        for _ in range(50):
            assert load(forward, 10, b"f2") == [b"echo:f2-%d" % i for i in range(10)]
            assert load(reverse, 10, b"r2") == [b"echo:r2-%d" % i for i in range(10)]
            if r0.bytes_forwarded > before[0] + 5000:
                break
        assert r0.bytes_forwarded > before[0] + 5000, "the healed path carries nothing"
        assert r1.bytes_forwarded > before[1] + 5000
        assert client.proc.poll() is None and end.proc.poll() is None


def test_check_config_shows_the_reverse_keys(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(
        '[Tcp]\nListen = "127.0.0.1:4001"\nAddress = "127.0.0.1:9000"\n'
        '[reverse]\nlisten = ["127.0.0.1:7001", "127.0.0.1:7002"]\naddress = "127.0.0.1:50051"\n'
    )
    r = run_resi("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert "[Reverse] listen: 127.0.0.1:7001, 127.0.0.1:7002" in r.stdout
    assert "local server: 127.0.0.1:50051" in r.stdout
    path.write_text('[Tcp]\nListen = "127.0.0.1:4001"\nAddress = "127.0.0.1:9000"\n[Reverse]\nAdress = "x:1"\n')
    r = run_resi("check-config", str(path))
    assert r.returncode == 2
    assert "[Reverse] Adress: unknown key (did you mean Address?)" in r.stderr


@pytest.mark.session
async def test_python_api_serves_calls_coming_back(exchange: EsiServer, facility: EsiServer):
    """``Gateway(reverse_listen=...)`` on the end side and an in-process
    client gateway with ``reverse_address=``: grpcio calls at the end
    gateway's reverse listener reach the exchange server."""
    end = resi_api.Gateway(
        listen=["127.0.0.1:0", "127.0.0.1:0"],
        address=facility.addr,
        reverse_listen="127.0.0.1:0",
        heartbeat_interval="100ms",
        dead_timeout="500ms",
        connect_timeout="3s",
    )
    async with end:
        assert len(end.reverse_addresses) == 1 and end.reverse_addresses[0] not in end.addresses
        async with FaultRelay(end.addresses[0], "p0") as r0, FaultRelay(end.addresses[1], "p1") as r1:
            client = await resi_api.Client.connect_redundant(
                [r0.addr, r1.addr],
                mode="permissive",
                reverse_address=exchange.addr,
                heartbeat_interval="100ms",
                dead_timeout="500ms",
            )
            async with client:
                for _ in range(200):
                    if end.reverse_channels == 1:
                        break
                    await asyncio.sleep(0.02)
                assert end.reverse_channels == 1
                # Forward: the in-process client → facility.
                assert await client.unary(f"/{SERVICE}/Unary", b"out", timeout=5) == b"echo:out"
                # Reverse: a grpcio client at the end gateway → exchange, in a thread.
                loop = asyncio.get_running_loop()
                calls0 = exchange.calls
                got = await loop.run_in_executor(None, load, end.reverse_addresses[0], 20, b"back")
                assert got == [b"echo:back-%d" % i for i in range(20)]
                assert exchange.calls == calls0 + 20
                # Both directions at once, a path cut in the middle.
                cut = loop.run_in_executor(None, load, end.reverse_addresses[0], 60, b"cut")
                outs = [client.unary(f"/{SERVICE}/Unary", b"o%d" % i, timeout=10) for i in range(60)]
                await asyncio.sleep(0.05)
                r1.kill()
                results = await asyncio.gather(*outs)
                assert results == [b"echo:o%d" % i for i in range(60)]
                assert await cut == [b"echo:cut-%d" % i for i in range(60)]


def test_reverse_keywords_are_validated():
    with pytest.raises(resi_api.ConfigError) as info:
        resi_api.Gateway(listen="127.0.0.1:0", address="127.0.0.1:1", reverse_listen="nonsense")
    assert "[Reverse] Listen" in str(info.value)
    with pytest.raises(resi_api.ConfigError) as info:
        resi_api.Gateway(listen="127.0.0.1:0", address="127.0.0.1:1", reverse_adress="127.0.0.1:2")
    assert "[Reverse] adress: unknown key (did you mean Address?)" in str(info.value)


async def test_reverse_path_is_refused_on_a_plain_connection(facility: EsiServer):
    async with resi_api.Gateway(listen="127.0.0.1:0", address=facility.addr, reverse_listen="127.0.0.1:0") as gw:
        # The gateway runs on its own threads: a blocking grpcio call is fine here.
        with channel(gw.address) as ch:
            with pytest.raises(grpc.RpcError) as info:
                ch.unary_unary("/resi.Resi/Reverse")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only be opened over a RESI session" in info.value.details()
        # No session: calls at the reverse listener have nowhere to go.
        assert gw.reverse_channels == 0
