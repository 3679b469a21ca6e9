"""Real `resi` gateways between grpcio clients and a grpcio server.

- one gateway in front of the server: a transparent gRPC proxy;
- a client gateway and an end gateway joined by two TCP paths, in strict
  and permissive mode (needs the redundant session layer);
- `Modify` with an unknown extension id;
- SIGTERM/SIGINT with a call in flight;
- a path killed mid-load (through a fault relay) loses no call.
"""

from __future__ import annotations

import signal
import threading
from concurrent import futures

import grpc
import pytest

from conftest import ResiFactory
from faultrelay import FaultRelay
from grpc_helpers import (
    CALL_TIMEOUT,
    SERVER_EXT,
    SERVICE,
    EsiServer,
    channel,
    check_all_shapes,
    load,
    modify,
)

UNKNOWN_EXT = 4343  # an extension id nobody implements


def test_helpers_work_without_a_gateway(esi_server: EsiServer):
    """The baseline: the grpcio client checks pass directly against the
    server, so a failure below is the gateway's."""
    check_all_shapes(esi_server.addr)
    assert modify(esi_server.addr, SERVER_EXT, True, b"x") == (SERVER_EXT, True, b"server:x")
    with pytest.raises(grpc.RpcError) as info:
        modify(esi_server.addr, UNKNOWN_EXT, False)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# ---------------------------------------------------------------------------
# One gateway


def test_single_gateway_forwards_all_shapes(resi: ResiFactory, esi_server: EsiServer):
    gw = resi.gateway(listen="127.0.0.1:0", address=esi_server.addr, name="single")
    check_all_shapes(gw.addrs[0])


def test_single_gateway_on_two_listeners(resi: ResiFactory, esi_server: EsiServer):
    gw = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, name="single2")
    for a in gw.addrs:
        check_all_shapes(a)


def test_modify_unknown_id_without_pass_is_unimplemented(resi: ResiFactory, esi_server: EsiServer):
    gw = resi.gateway(listen="127.0.0.1:0", address=esi_server.addr, name="modify")
    with pytest.raises(grpc.RpcError) as info:
        modify(gw.addrs[0], UNKNOWN_EXT, False, b"data")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert str(UNKNOWN_EXT) in info.value.details(), info.value.details()
    # Answered by the gateway, not forwarded.
    assert all(ext_id != UNKNOWN_EXT for ext_id, _, _ in esi_server.modify_seen)


def test_modify_unknown_id_with_pass_is_forwarded(resi: ResiFactory, esi_server: EsiServer):
    gw = resi.gateway(listen="127.0.0.1:0", address=esi_server.addr, name="modify-pass")
    # Known to the server only: forwarded, answered by the server.
    assert modify(gw.addrs[0], SERVER_EXT, True, b"data") == (SERVER_EXT, True, b"server:data")
    assert (SERVER_EXT, True, b"data") in esi_server.modify_seen
    # Known to nobody, pass=true: forwarded, and the server's UNIMPLEMENTED comes back.
    with pytest.raises(grpc.RpcError) as info:
        modify(gw.addrs[0], UNKNOWN_EXT, True, b"data")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not supported by this server" in info.value.details()
    assert (UNKNOWN_EXT, True, b"data") in esi_server.modify_seen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_lets_an_in_flight_call_complete(resi: ResiFactory, esi_server: EsiServer, sig):
    gw = resi.gateway(listen="127.0.0.1:0", address=esi_server.addr, name="graceful")
    with channel(gw.addrs[0]) as ch, futures.ThreadPoolExecutor(1) as pool:
        slow = ch.unary_unary(f"/{SERVICE}/Slow")
        fut = pool.submit(slow, b"1500", timeout=CALL_TIMEOUT)
        assert esi_server.slow_started.wait(10), "the slow call did not reach the server"
        gw.signal(sig)
        assert fut.result(timeout=CALL_TIMEOUT) == b"slow done"
    assert gw.wait(20) == 0, gw.stderr


# ---------------------------------------------------------------------------
# Two gateways, two TCP paths


@pytest.mark.session
@pytest.mark.parametrize("two_gateways", ["strict", "permissive"], indirect=True)
def test_two_gateways_two_paths_all_shapes(two_gateways):
    client, end, target = two_gateways
    check_all_shapes(target)
    # Both paths in use: the end gateway accepted a connection on each.
    assert client.proc.poll() is None and end.proc.poll() is None


@pytest.mark.session
@pytest.mark.parametrize("two_gateways", ["strict", "permissive"], indirect=True)
def test_two_gateways_modify_unknown_id(two_gateways, esi_server: EsiServer):
    _client, _end, target = two_gateways
    with pytest.raises(grpc.RpcError) as info:
        modify(target, UNKNOWN_EXT, False)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert str(UNKNOWN_EXT) in info.value.details()
    assert modify(target, SERVER_EXT, True, b"d") == (SERVER_EXT, True, b"server:d")


@pytest.mark.session
@pytest.mark.parametrize("two_gateways", ["strict", "permissive"], indirect=True)
def test_two_gateways_concurrent_calls(two_gateways):
    _client, _end, target = two_gateways
    with channel(target) as ch, futures.ThreadPoolExecutor(8) as pool:
        unary = ch.unary_unary(f"/{SERVICE}/Unary")
        payloads = [b"call-%d-" % i + bytes(i % 256 for i in range(i * 97 % 5000)) for i in range(100)]
        results = list(pool.map(lambda p: unary(p, timeout=CALL_TIMEOUT), payloads))
    assert results == [b"echo:" + p for p in payloads]


def _load(target: str, n: int, on_progress=None) -> list[bytes]:
    return load(target, n, b"load", on_progress, pause=0.01)


@pytest.mark.session
@pytest.mark.parametrize("fault", ["kill", "blackhole"])
def test_permissive_path_lost_mid_load_loses_no_call(resi: ResiFactory, esi_server: EsiServer, fault):
    end = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, mode="permissive", name="end")
    with FaultRelay(end.addrs[0], "path0") as r0, FaultRelay(end.addrs[1], "path1") as r1:
        client = resi.gateway(listen="127.0.0.1:0", address=[r0.addr, r1.addr], mode="permissive", name="client")
        n = 300
        faulted = threading.Event()

        def progress(done: int) -> None:
            if done >= n // 4 and not faulted.is_set():
                faulted.set()
                getattr(r0, fault)()

        assert _load(client.addrs[0], 5) == [b"echo:load-%d" % i for i in range(5)]
        # Both paths joined the session and carry the traffic.
        assert r0.connections >= 1 and r1.connections >= 1
        before = (r0.bytes_forwarded, r1.bytes_forwarded)
        results = _load(client.addrs[0], n, progress)
        assert faulted.is_set()
        assert results == [b"echo:load-%d" % i for i in range(n)]
        assert r1.bytes_forwarded > before[1] and r0.bytes_forwarded > before[0]
        # The surviving path still carries calls, and the healed one may rejoin.
        r0.heal()
        assert _load(client.addrs[0], 20) == [b"echo:load-%d" % i for i in range(20)]
        assert client.proc.poll() is None and end.proc.poll() is None


@pytest.mark.session
def test_strict_path_blackholed_leaves_the_live_set(resi: ResiFactory, esi_server: EsiServer):
    """In strict mode a silent path is declared dead (DeadTimeout) and calls
    go on over the other; nothing is lost."""
    extra = 'HeartbeatInterval = "100ms"\nDeadTimeout = "500ms"\n'
    end = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, name="end", extra=extra)
    with FaultRelay(end.addrs[0], "path0") as r0, FaultRelay(end.addrs[1], "path1") as r1:
        client = resi.gateway(listen="127.0.0.1:0", address=[r0.addr, r1.addr], name="client", extra=extra)
        assert _load(client.addrs[0], 20) == [b"echo:load-%d" % i for i in range(20)]
        assert r0.connections >= 1 and r1.connections >= 1
        r1.blackhole()
        assert _load(client.addrs[0], 50) == [b"echo:load-%d" % i for i in range(50)]
        r1.heal()
        assert _load(client.addrs[0], 20) == [b"echo:load-%d" % i for i in range(20)]
