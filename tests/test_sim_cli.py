"""``resi sim`` as a process: serves every role it is given, prints its
address like ``resi gateway``, stops with exit 0 on SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
import uuid

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


def test_python_subcommand_dispatch():
    from resi.cli import python_command
    from resi.sim import cli as sim_cli

    assert python_command(["gateway", "--config", "g.toml"]) is None and python_command([]) is None
    assert python_command(["sim", "facility"]) == (sim_cli.main, ["facility"])
    assert python_command(["--log-level", "debug", "sim", "exchange"]) == (sim_cli.main, ["exchange", "--log-level", "debug"])
    assert python_command(["--log-level=warning", "sim", "registry"]) == (sim_cli.main, ["registry", "--log-level=warning"])


def test_sim_behind_resi_gateway_processes(resi: ResiFactory):
    """The command-line story: ``resi sim facility`` behind an end and a
    client ``resi gateway``; a grpcio exchange negotiates through them."""
    from resi.sim import _wire, price_map

    sim = resi.start(args=["sim", "facility", "--listen", "127.0.0.1:0"], name="sim")
    [fac] = sim.wait_listening(1)
    end = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=fac, name="end")
    client = resi.gateway(listen="127.0.0.1:0", address=end.addrs[:2], name="client")
    route = esi.DerRoute(exchange_uid="exchange-1", facility_uid="facility-1")
    first, second = uuid.uuid4(), uuid.uuid4()
    offers = [esi.PriceMapOffer(route=route, offer_id=_wire.uuid_msg(first), price_map=price_map(price="0.2"))]
    with grpc.insecure_channel(client.addrs[0]) as ch:
        stub = facility_grpc.DerFacilityServiceStub(ch)

        def requests():
            yield offers[0]
            deadline = time.monotonic() + 10
            while len(offers) < 2 and time.monotonic() < deadline:  # the counter-offer's price, as a new offer
                time.sleep(0.01)
            if len(offers) == 2:
                yield offers[1]

        answers = []
        for answer in stub.ProposePriceMapOffer(requests(), timeout=10):
            answers.append(answer.WhichOneof("accept_oneof"))
            if answer.WhichOneof("accept_oneof") == "counter_offer":
                offers.append(esi.PriceMapOffer(route=route, offer_id=_wire.uuid_msg(second), price_map=answer.counter_offer))
        assert answers == ["counter_offer", "accept"]
        status = stub.GetPriceMapOfferStatus(esi.PriceMapOfferStatusRequest(route=route, offer_id=_wire.uuid_msg(second)), timeout=5)
        assert esi.PriceMapOfferStatus.Status.Name(status.status) in ("ACCEPTED", "EXECUTING")
    sim.signal(signal.SIGINT)
    assert sim.wait() == 0
    assert any("offer %s" % first in line and "counter" in line for line in sim.lines), sim.stderr
