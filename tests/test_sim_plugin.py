"""The pytest plugin's simulator fixtures and ``resi_pair(upstream=...)``:
they work, are documented in ``pytest --fixtures``, and start fast."""

from __future__ import annotations

import re

import pytest

import resi
import resi.sim as sim
from resi import esi
from resi.testing import GatewayFactory, PairFactory

pytest_plugins = ("pytester",)


async def test_sim_fixtures_and_a_pair_in_front_of_one(esi_facility: sim.Facility, esi_exchange: sim.Exchange, esi_registry: sim.Registry, resi_pair: PairFactory):
    assert [i.uid for i in esi_registry.listing()] == [esi_exchange.uid]
    pair = await resi_pair(upstream=esi_facility.address, paths=2)
    assert pair.upstream == esi_facility.address
    rnd = await esi_exchange.run_offer_round(pair.client, facility_uid=esi_facility.uid)
    assert rnd.outcome == "accepted" and esi_facility.calls["ProposePriceMapOffer"] == 1
    reply = await pair.client.unary(
        "/solarnetwork.esi.service.DerFacilityService/GetPriceParameters", esi.DerRoute(exchange_uid="e", facility_uid="facility-1").SerializeToString(), timeout=5
    )
    assert esi.PriceParameters.FromString(reply).always_buy_below_price.nanos == 50_000_000
    await pair.wait_paths(2)


async def test_resi_pair_default_is_still_esi_node(resi_pair: PairFactory, resi_gateway: GatewayFactory, esi_node):
    pair = await resi_pair()
    assert pair.upstream == esi_node.address
    assert await pair.client.unary("/resi.test.Echo/Unary", b"hi", timeout=5) == b"hi"
    gw = await resi_gateway(listen="127.0.0.1:0", address=esi_node.address)
    assert isinstance(gw, resi.Gateway) and gw.running


def test_fixtures_are_documented(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    out = result.stdout.str()
    for name, words in {
        "esi_facility": "resi.sim.Facility",
        "esi_exchange": "resi.sim.Exchange",
        "esi_registry": "lists the ``esi_exchange`` fixture",
        "resi_pair": "upstream",
        "resi_gateway": "GatewayFactory",
        "esi_node": "EsiNode",
    }.items():
        block = re.search(rf"^{name}\b.*?\n((?:    .*\n)+)", out, re.M)
        assert block is not None and words in block.group(1), (name, out)


def test_sim_fixtures_start_well_under_a_second(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        async def test_facility(esi_facility):
            assert esi_facility.address
        async def test_exchange(esi_exchange):
            assert esi_exchange.address
        async def test_registry(esi_registry):
            assert esi_registry.address
        async def test_pair(esi_facility, resi_pair):
            assert (await resi_pair(upstream=esi_facility.address)).upstream
        """
    )
    result = pytester.runpytest("--durations=0", "--durations-min=0", "-vv", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    setups = {m.group(2): float(m.group(1)) for m in re.finditer(r"^([\d.]+)s setup\s+\S+::(\w+)", result.stdout.str(), re.M)}
    assert set(setups) >= {"test_facility", "test_exchange", "test_registry"}, result.stdout.str()
    slow = {k: v for k, v in setups.items() if v >= 0.5}
    assert not slow, setups
