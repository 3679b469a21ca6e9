"""``resi sim`` as a process: serves every role it is given, prints its
address like ``resi gateway``, stops with exit 0 on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import socket

import grpc
import pytest

from resi import esi
from resi.sim._grpc import exchange_grpc, facility_grpc, registry_grpc
from conftest import ResiFactory, run_resi


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sim_serves_all_roles_and_stops_on_signal(resi: ResiFactory, sig: int):
    args = ["sim", "facility", "exchange", "registry", "--listen", "127.0.0.1:0", "--facility-uid", "f-cli", "--accept-at", "0.5", "--list", "Far,ex-far,dns:///127.0.0.1:9"]
    p = resi.start(args=args, name="sim")
    [addr] = p.wait_listening(1)
    with grpc.insecure_channel(addr) as ch:
        route = esi.DerRoute(exchange_uid="exchange-1", facility_uid="f-cli")
        params = facility_grpc.DerFacilityServiceStub(ch).GetPowerParameters(route, timeout=5)
        assert params.voltage_range.max == 252
        key = exchange_grpc.DerFacilityExchangeStub(ch).GetPublicCryptoKey(esi.Empty(), timeout=5)
        assert key.algorithm == "EC" and len(key.key) > 60
        listed = list(registry_grpc.DerFacilityExchangeRegistryStub(ch).ListDerFacilityExchanges(esi.DerFacilityExchangeRequest(), timeout=5))
        assert [(i.uid, i.endpoint_uri) for i in listed] == [("exchange-1", addr), ("ex-far", "dns:///127.0.0.1:9")]
        with pytest.raises(grpc.RpcError) as e:
            facility_grpc.DerFacilityServiceStub(ch).GetPowerParameters(esi.DerRoute(exchange_uid="x", facility_uid="facility-1"), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'f-cli'" in e.value.details()
    p.signal(sig)
    assert p.wait() == 0, p.stderr


def test_sim_usage_and_bind_errors():
    r = run_resi("sim", "kitchen")
    assert r.returncode == 2 and "invalid choice: 'kitchen'" in r.stderr
    r = run_resi("sim", "facility", "--accept-at", "cheap")
    assert r.returncode == 2 and "expected a decimal price" in r.stderr
    r = run_resi("sim", "registry", "--list", "only-two,fields")
    assert r.returncode == 2 and "expected NAME,UID,URI" in r.stderr
    r = run_resi("sim", "facility", "--listen", "nowhere")
    assert r.returncode == 2 and "--listen: expected host:port, got 'nowhere'" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = run_resi("sim", "exchange", "--listen", "127.0.0.1:%d" % taken.getsockname()[1])
    assert r.returncode == 1 and "cannot listen on" in r.stderr, r.stderr


def test_help_lists_sim():
    r = run_resi("--help")
    assert r.returncode == 0 and "sim " in r.stdout and "simulated ESI roles" in r.stdout
    r = run_resi("sim", "--help")
    assert r.returncode == 0 and "facility, exchange and/or registry" in r.stdout
