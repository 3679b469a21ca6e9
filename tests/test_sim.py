"""resi.sim: the three simulated ESI roles over real gRPC.

Every RPC of the three services is called with grpcio stubs (an
independent client) straight at the simulator and through a resi gateway
pair; invalid input gets INVALID_ARGUMENT naming the field; offer rounds
end in accept, reject and counter-offers; registration runs end to end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import grpc
import pytest

import resi
import resi.sim as sim
from resi import esi
from resi.sim import _wire
from resi.sim._grpc import exchange_grpc, facility_grpc, registry_grpc
from resi.sim.series import MAX_INTERVALS, PowerProfile, PriceSchedule, Step, interval_starts, most_recent_start, step_for
from resi.testing import FAST_TIMERS

INVALID = grpc.StatusCode.INVALID_ARGUMENT
HOUR, MINUTE = esi.TimeUnit.Value("HOUR"), esi.TimeUnit.Value("MINUTE")
DAY0 = 1_796_083_200  # a UTC midnight


def route(ex: str = "exchange-1", fac: str = "facility-1") -> esi.DerRoute:
    return esi.DerRoute(exchange_uid=ex, facility_uid=fac)


def datum_range(start: float, end: float, unit: int = 0, n: int = 0, r: esi.DerRoute | None = None) -> esi.DatumRequest:
    req = esi.DatumRequest(route=r or route(), time_unit=unit, time_unit_coalescence=n)
    req.time_range.min.CopyFrom(_wire.timestamp(start))
    req.time_range.max.CopyFrom(_wire.timestamp(end))
    return req


def offer(price: str = "0.30", oid: uuid.UUID | None = None, r: esi.DerRoute | None = None) -> esi.PriceMapOffer:
    return esi.PriceMapOffer(route=r or route(), offer_id=_wire.uuid_msg(oid or uuid.uuid4()), price_map=sim.price_map(price=price))


def ec_key() -> esi.CryptoKey:
    return esi.CryptoKey(algorithm="EC", encoding="X.509", key=sim.KeyPair.generate().public_der)


def form_data(fac: str = "facility-2", uri: str = "127.0.0.1:1", nonce: bytes = b"n" * 16, **answers: str) -> esi.DerFacilityRegistrationFormData:
    data = {**sim.FORM_ANSWERS, **{k.replace("_", "-"): v for k, v in answers.items()}}
    return esi.DerFacilityRegistrationFormData(
        route=route(fac=fac), facility_endpoint_uri=uri, facility_nonce=nonce, facility_public_key=ec_key(), data=esi.FormData(key=sim.FORM_KEY, data=data)
    )


class Stubs:
    def __init__(self, channel: grpc.aio.Channel):
        self.fac = facility_grpc.DerFacilityServiceStub(channel)
        self.ex = exchange_grpc.DerFacilityExchangeStub(channel)
        self.reg = registry_grpc.DerFacilityExchangeRegistryStub(channel)


@pytest.fixture
async def node():
    """Facility, exchange and registry on one server (as behind one gateway)."""
    fac = sim.Facility(clock=lambda: DAY0 + 12 * 3600)
    ex = sim.Exchange(clock=lambda: DAY0 + 12 * 3600)
    reg = sim.Registry(exchanges=[ex, ("Other", "exchange-2", "dns:///127.0.0.1:9091")])
    async with sim.serve([fac, ex, reg]) as server:
        yield server, fac, ex, reg


@pytest.fixture
async def stubs(node):
    server = node[0]
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield Stubs(ch)


async def expect_invalid(call, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == INVALID, e.value
    for f in fragments:
        assert f in e.value.details(), (f, e.value.details())
    return e.value.details()


async def collect(stream) -> list:
    return [m async for m in stream]


# ---------------------------------------------------------------------------
# Every RPC answers, straight and through a gateway pair


async def exercise_every_rpc(address: str, fac: sim.Facility, ex: sim.Exchange, reg: sim.Registry) -> None:
    """Calls all 18 RPCs with valid input over a grpcio channel to
    ``address`` and checks each answer and what the simulator recorded."""
    async with grpc.aio.insecure_channel(address) as ch:
        s = Stubs(ch)
        # Registry
        listed = await collect(s.reg.ListDerFacilityExchanges(esi.DerFacilityExchangeRequest()))
        assert [(i.uid, i.endpoint_uri) for i in listed] == [(ex.uid, ex.address), ("exchange-2", "dns:///127.0.0.1:9091")]
        # Exchange: registration
        key = await s.ex.GetPublicCryptoKey(esi.Empty())
        assert (key.algorithm, key.encoding, bytes(key.key)) == ("EC", "X.509", ex.keys.public_der)
        form = await s.ex.GetDerFacilityRegistrationForm(esi.DerFacilityRegistrationFormRequest(exchange_uid=ex.uid, language_code="en"))
        assert form.exchange_uid == ex.uid and [f.key for f in form.form.settings][1:] == ["uici", "cust-id", "cust-surname"]
        fac_uid = f"fac-{uuid.uuid4().hex[:6]}"
        receipt = await s.ex.SubmitDerFacilityRegistrationForm(form_data(fac=fac_uid, uri="127.0.0.1:1"))
        assert len(receipt.exchange_nonce) == 24 and ex.registrations[fac_uid].exchange_nonce == receipt.exchange_nonce
        r = route(ex.uid, fac_uid)
        # Exchange: what facilities provide
        chars = sim.default_characteristics()
        chars.route.CopyFrom(r)
        assert await s.ex.ProvideDerCharacteristics(iter([chars])) == esi.Empty()
        assert ex.characteristics[fac_uid].load_power_max == 20_000
        assert await s.ex.ProvidePriceMaps(iter([esi.PriceMapCharacteristics(route=r, price_map=[sim.price_map(price="0.4")])])) == esi.Empty()
        assert ex.price_maps[fac_uid][0].price.apparent_energy_price.nanos == 400_000_000
        programs = esi.DerProgramSet(route=r, type=[esi.DerProgramType.Value("RAMPING")])
        assert await s.ex.ProvideSupportedDerPrograms(iter([programs])) == esi.Empty()
        assert ex.programs[fac_uid] == ["RAMPING"]
        prices = await collect(s.ex.ListPrices(datum_range(DAY0, DAY0 + 6 * 3600, r=r)))
        assert [p.ts.seconds for p in prices] == [DAY0 + h * 3600 for h in range(6)]
        assert all(p.time_unit == HOUR and p.price_components.apparent_energy_price.currency_code == "USD" for p in prices)
        # Facility
        fr = route(ex.uid, fac.uid)
        assert (await s.fac.GetPowerParameters(fr)).voltage_range.max == 252
        new = esi.PowerParameters(voltage_range=esi.SignedInt32Range(min=230, max=250))
        in_force = await s.fac.SetPowerParameters(new)
        assert in_force.voltage_range.min == 230 and in_force.frequency_range.max == 61
        assert (await s.fac.GetPriceParameters(fr)).avoid_buy_over_price.nanos == 300_000_000
        profile = await collect(s.fac.ListPowerProfile(datum_range(DAY0, DAY0 + 3600, r=fr)))
        assert [(d.ts.seconds - DAY0, d.time_length, d.time_unit) for d in profile] == [(t, 15, MINUTE) for t in (0, 900, 1800, 2700)]
        sent = [ex._price_datum(fac.uid, DAY0 + h * 3600, ex.step) for h in range(3)]
        before = len(fac.prices)
        assert await s.fac.ProvidePrices(iter(sent)) == esi.Empty()
        assert fac.prices[before:] == sent
        call = s.fac.ProposePriceMapOffer()
        o = offer("0.30", r=fr)
        await call.write(o)
        answer = await call.read()
        assert answer.offer_id == o.offer_id and answer.WhichOneof("accept_oneof") == "accept" and answer.accept
        assert await call.read() is grpc.aio.EOF  # the facility completes its side on a final answer
        oid = _wire.uuid_of(o.offer_id, "offer_id")
        status = await s.fac.GetPriceMapOfferStatus(esi.PriceMapOfferStatusRequest(route=fr, offer_id=o.offer_id))
        assert esi.PriceMapOfferStatus.Status.Name(status.status) == "EXECUTING"  # now is inside the offer's 15 minutes
        fb = await s.fac.ProvidePriceMapOfferFeedback(
            esi.PriceMapOfferFeedback(route=fr, offer_id=o.offer_id, obligation_status=esi.PriceMapOfferFeedback.ObligationStatus.Value("SATISFIED"))
        )
        assert fb.accepted and fb.offer_id == o.offer_id and fac.offers[oid].feedback == "SATISFIED"
        # The facility's status report reaches the exchange for an offer it made.
        ex.offers[oid] = sim.ExchangeOffer(offer_id=oid, facility_uid=fac.uid, offer=o)
        ack = await s.ex.ProvidePriceMapOfferStatus(esi.PriceMapOfferStatus(route=fr, offer_id=o.offer_id, status=status.status))
        assert ack.accepted and ack.route.exchange_uid == ex.uid and ex.offers[oid].statuses == ["EXECUTING"]
        # The registration callback: the facility checks the token it expects.
        fac.registrations["exchange-9"] = sim.ExchangeRegistration("exchange-9", "", b"", b"f" * 8, b"e" * 24, "127.0.0.1:2")
        fac.registrations["exchange-9"]._receipt.set()
        token = sim.registration_token(b"e" * 24, b"f" * 8, "exchange-9", fac.uid, "127.0.0.1:2")
        done = esi.DerFacilityRegistration(route=route("exchange-9", fac.uid), success=True, registration_token=token)
        assert await s.fac.CompleteDerFacilityRegistration(done) == esi.Empty()
        assert fac.registrations["exchange-9"].status == "registered"


SERVICES = {
    "DerFacilityService": 9,
    "DerFacilityExchange": 8,
    "DerFacilityExchangeRegistry": 1,
}


def assert_every_rpc_counted(fac: sim.Facility, ex: sim.Exchange, reg: sim.Registry) -> None:
    for role, service in ((fac, "DerFacilityService"), (ex, "DerFacilityExchange"), (reg, "DerFacilityExchangeRegistry")):
        methods = esi_methods(service)
        assert len(methods) == SERVICES[service]
        assert {m: role.calls[m] > 0 for m in methods} == {m: True for m in methods}


def esi_methods(service: str) -> list[str]:
    from resi.esi._proto.solarnetwork.esi.service import der_facility_exchange_pb2, der_facility_exchange_registry_pb2, der_facility_service_pb2

    for mod in (der_facility_exchange_pb2, der_facility_exchange_registry_pb2, der_facility_service_pb2):
        if service in mod.DESCRIPTOR.services_by_name:
            return [m.name for m in mod.DESCRIPTOR.services_by_name[service].methods]
    raise KeyError(service)


async def test_every_rpc_answers_over_grpcio(node):
    server, fac, ex, reg = node
    await exercise_every_rpc(server.address, fac, ex, reg)
    assert_every_rpc_counted(fac, ex, reg)


async def test_every_rpc_answers_through_a_gateway_pair(node):
    server, fac, ex, reg = node
    async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=server.address, name="end", **FAST_TIMERS) as end:
        async with resi.Gateway(listen="127.0.0.1:0", address=end.addresses, name="client", **FAST_TIMERS) as cgw:
            await exercise_every_rpc(cgw.address, fac, ex, reg)
            assert cgw.upstream_kind == "resi"
            stats = await cgw.upstream_stats()
            assert stats is not None and all(p.bytes_sent > 0 for p in stats.paths)
    assert_every_rpc_counted(fac, ex, reg)


# ---------------------------------------------------------------------------
# Invalid input: INVALID_ARGUMENT with a message naming the problem


async def test_facility_refuses_bad_input(stubs, node):
    s = stubs
    fac = node[1]
    await expect_invalid(s.fac.GetPowerParameters(esi.DerRoute(exchange_uid="x")), "route.facility_uid: missing")
    await expect_invalid(s.fac.GetPriceParameters(route(fac="other")), "route.facility_uid", "'facility-1'", "'other'")
    await expect_invalid(s.fac.GetPowerParameters(route(ex="")), "route.exchange_uid: missing")
    bad = {
        "voltage_range.min: 100 is outside the limits 200..280 V": esi.PowerParameters(voltage_range=esi.SignedInt32Range(min=100, max=250)),
        "frequency_range.max: 70 is outside the limits 55..65 Hz": esi.PowerParameters(frequency_range=esi.SignedInt32Range(min=60, max=70)),
        "power_factor_range.min: 0.5 is outside": esi.PowerParameters(power_factor_range=esi.FloatRange(min=0.5, max=1.0)),
        "voltage_range: min (260) is above max (240)": esi.PowerParameters(voltage_range=esi.SignedInt32Range(min=260, max=240)),
    }
    for message, params in bad.items():
        await expect_invalid(s.fac.SetPowerParameters(params), message)
    assert fac.power_parameters == sim.default_power_parameters()  # nothing changed
    no_range = esi.DatumRequest(route=route())
    await expect_invalid(collect(s.fac.ListPowerProfile(no_range)), "set time_range or time_concept")
    await expect_invalid(collect(s.fac.ListPowerProfile(esi.DatumRequest(time_concept=0))), "route: missing")
    await expect_invalid(collect(s.fac.ListPowerProfile(datum_range(DAY0 + 10, DAY0))), "time_range: max", "must be after min")
    await expect_invalid(collect(s.fac.ListPowerProfile(datum_range(DAY0, DAY0 + 86400 * 30, unit=1))), "at most 10000")
    await expect_invalid(collect(s.fac.ListPowerProfile(datum_range(DAY0, DAY0 + 60, unit=6))), "time_unit: MONTH is not supported")
    await expect_invalid(collect(s.fac.ListPowerProfile(datum_range(DAY0, DAY0 + 60, unit=5, n=1000))), "time_unit_coalescence: 1000 x WEEK is longer than ten years")
    far = datum_range(DAY0, DAY0 + 60)
    far.time_range.max.seconds = 10**15
    await expect_invalid(collect(s.fac.ListPowerProfile(far)), "time_range.max", "outside the Timestamp range")
    half = esi.DatumRequest(route=route())
    half.time_range.min.CopyFrom(_wire.timestamp(DAY0))
    await expect_invalid(collect(s.fac.ListPowerProfile(half)), "time_range.max: missing")
    unknown = esi.PriceMapOfferStatusRequest(route=route(), offer_id=_wire.uuid_msg(uuid.uuid4()))
    await expect_invalid(s.fac.GetPriceMapOfferStatus(unknown), "offer_id: unknown offer")
    await expect_invalid(s.fac.GetPriceMapOfferStatus(esi.PriceMapOfferStatusRequest(route=route())), "offer_id: missing")
    feedback = esi.PriceMapOfferFeedback(route=route(), offer_id=_wire.uuid_msg(uuid.uuid4()), obligation_status=7)
    await expect_invalid(s.fac.ProvidePriceMapOfferFeedback(feedback), "obligation_status: unknown value 7")
    good = esi.PriceDatum(route=route(), ts=_wire.timestamp(DAY0), price_components=esi.PriceComponents(apparent_energy_price=_wire.money_msg("0.1", "USD")))
    wrong_sign = esi.PriceDatum()
    wrong_sign.CopyFrom(good)
    wrong_sign.price_components.apparent_energy_price.nanos = -5
    wrong_sign.price_components.apparent_energy_price.units = 1
    await expect_invalid(s.fac.ProvidePrices(iter([good, wrong_sign])), "PriceDatum #2", "opposite signs")
    no_currency = esi.PriceDatum()
    no_currency.CopyFrom(good)
    no_currency.price_components.apparent_energy_price.currency_code = "dollars"
    await expect_invalid(s.fac.ProvidePrices(iter([no_currency])), "currency_code", "ISO 4217")
    assert fac.prices == []  # a refused stream keeps nothing
    await expect_invalid(s.fac.CompleteDerFacilityRegistration(esi.DerFacilityRegistration(route=route(ex="nobody"))), "no registration with exchange 'nobody' is pending")
    fac.registrations["exchange-1"] = sim.ExchangeRegistration("exchange-1", "", b"", b"f" * 8, b"e" * 24, "127.0.0.1:2")
    fac.registrations["exchange-1"]._receipt.set()
    await expect_invalid(s.fac.CompleteDerFacilityRegistration(esi.DerFacilityRegistration(route=route(), success=True, registration_token=b"x" * 32)), "registration_token: does not match")
    assert fac.registrations["exchange-1"].status == "pending"


async def test_bad_offers_are_refused_on_the_stream(stubs, node):
    s = stubs
    oid = uuid.uuid4()
    no_map = esi.PriceMapOffer(route=route(), offer_id=_wire.uuid_msg(oid))
    cases = [
        (esi.PriceMapOffer(offer_id=_wire.uuid_msg(oid), price_map=sim.price_map()), "route: missing"),
        (no_map, "price_map: missing"),
        (esi.PriceMapOffer(route=route(), price_map=sim.price_map()), "offer_id: missing"),
        (offer(r=route(fac="else")), "route.facility_uid"),
    ]
    negative = offer()
    negative.price_map.duration.seconds = -1
    cases.append((negative, "price_map.duration: must not be negative"))
    for msg, fragment in cases:
        call = s.fac.ProposePriceMapOffer()
        await call.write(msg)
        await expect_invalid(call.read(), fragment)
    # An offer id can be used once.
    used = uuid.uuid4()
    call = s.fac.ProposePriceMapOffer()
    await call.write(offer("0.30", used))
    assert (await call.read()).accept
    call = s.fac.ProposePriceMapOffer()
    await call.write(offer("0.30", used))
    await expect_invalid(call.read(), f"offer_id: {used} was already used")


async def test_exchange_registration_checks(stubs, node):
    """The reference exchange's checks (esi-protocol.md §2.5), each named."""
    s = stubs
    ex = node[2]
    ex.auto_complete = False
    key_rsa = ec_key()
    key_rsa.algorithm = "RSA"
    bad_enc = ec_key()
    bad_enc.encoding = "PKCS#8"
    junk = ec_key()
    junk.key = b"not a key"
    cases = {
        "route: missing": esi.DerFacilityRegistrationFormData(),
        "route.exchange_uid: this node is 'exchange-1', got 'other'": None,
        "facility_nonce: must be 8 to 24 bytes long, got 7": form_data(nonce=b"x" * 7),
        "facility_nonce: must be 8 to 24 bytes long, got 25": form_data(nonce=b"x" * 25),
        "facility_public_key: missing": None,
        "facility_public_key.algorithm: not supported (must be 'EC'), got 'RSA'": form_data(),
        "facility_public_key.encoding: not supported (must be 'X.509')": form_data(),
        "facility_public_key.key: not an X.509 SubjectPublicKeyInfo": form_data(),
        "facility_endpoint_uri: missing": form_data(uri=""),
        "facility_endpoint_uri: expected host:port": form_data(uri="not a uri"),
        "data.key: unknown form 'other-form'": form_data(),
        "data['uici']: invalid syntax '12-34'; must look like 123-1234-1234": form_data(uici="12-34"),
        "data['cust-id']: missing": form_data(cust_id=""),
        "data['cust-surname']: missing": form_data(cust_surname=" "),
        "data: missing": form_data(),
    }
    cases["route.exchange_uid: this node is 'exchange-1', got 'other'"] = form_data()
    cases["route.exchange_uid: this node is 'exchange-1', got 'other'"].route.exchange_uid = "other"
    cases["facility_public_key: missing"] = form_data()
    cases["facility_public_key: missing"].ClearField("facility_public_key")
    cases["facility_public_key.algorithm: not supported (must be 'EC'), got 'RSA'"].facility_public_key.CopyFrom(key_rsa)
    cases["facility_public_key.encoding: not supported (must be 'X.509')"].facility_public_key.CopyFrom(bad_enc)
    cases["facility_public_key.key: not an X.509 SubjectPublicKeyInfo"].facility_public_key.CopyFrom(junk)
    cases["data.key: unknown form 'other-form'"].data.key = "other-form"
    cases["data: missing"].ClearField("data")
    for message, request in cases.items():
        await expect_invalid(s.ex.SubmitDerFacilityRegistrationForm(request), message)
    assert ex.registrations == {}
    # A valid form with a 24-byte nonce, dns:/// endpoint; then the same uid again.
    receipt = await s.ex.SubmitDerFacilityRegistrationForm(form_data(fac="f9", uri="dns:///localhost:9092", nonce=b"z" * 24))
    assert len(receipt.exchange_nonce) == 24
    await expect_invalid(s.ex.SubmitDerFacilityRegistrationForm(form_data(fac="f9")), "route.facility_uid: 'f9' is already submitted")
    await expect_invalid(s.ex.GetDerFacilityRegistrationForm(esi.DerFacilityRegistrationFormRequest(exchange_uid="nope")), "exchange_uid: this exchange is 'exchange-1'")


async def test_exchange_refuses_bad_provisions(stubs, node):
    s, ex = stubs, node[2]
    chars = sim.default_characteristics()
    chars.route.CopyFrom(route())
    chars.load_power_factor = 1.5
    await expect_invalid(s.ex.ProvideDerCharacteristics(iter([chars])), "load_power_factor: must be between -1 and 1, got 1.5")
    await expect_invalid(s.ex.ProvideSupportedDerPrograms(iter([esi.DerProgramSet(route=route(), type=[1, 42])])), "type[1]: unknown value 42")
    pm = sim.price_map()
    pm.ClearField("price")
    await expect_invalid(s.ex.ProvidePriceMaps(iter([esi.PriceMapCharacteristics(route=route(), price_map=[sim.price_map(), pm])])), "price_map[1].price.apparent_energy_price: missing")
    await expect_invalid(s.ex.ProvidePriceMaps(iter([esi.PriceMapCharacteristics(route=route(ex="x"))])), "route.exchange_uid: this node is 'exchange-1', got 'x'")
    unknown = esi.PriceMapOfferStatus(route=route(), offer_id=_wire.uuid_msg(uuid.uuid4()), status=1)
    await expect_invalid(s.ex.ProvidePriceMapOfferStatus(unknown), "offer_id: unknown offer")
    await expect_invalid(collect(s.ex.ListPrices(datum_range(DAY0, DAY0 + 3600, unit=7))), "time_unit: YEAR is not supported")
    assert ex.characteristics == {} and ex.programs == {} and ex.price_maps == {}
    await expect_invalid(collect(s.reg.ListDerFacilityExchanges(esi.DerFacilityExchangeRequest(program_types=[99]))), "program_types[0]: unknown value 99")
    ex.require_registration = True
    await expect_invalid(collect(s.ex.ListPrices(datum_range(DAY0, DAY0 + 3600))), "route.facility_uid: 'facility-1' is not registered with this exchange")


async def test_most_recent_and_coalescing(stubs):
    s = stubs
    now = DAY0 + 12 * 3600
    recent = await collect(s.fac.ListPowerProfile(esi.DatumRequest(route=route(), time_concept=esi.TimeConcept.Value("MOST_RECENT"))))
    assert [(d.ts.seconds, d.time_length) for d in recent] == [(now - 900, 15)]
    buckets = await collect(s.fac.ListPowerProfile(datum_range(DAY0 + 1, DAY0 + 86400, unit=HOUR, n=6)))
    assert [(d.ts.seconds - DAY0) // 3600 for d in buckets] == [6, 12, 18]  # aligned: the first starts after min
    assert all((d.time_length, d.time_unit) == (6, HOUR) for d in buckets)
    again = await collect(s.fac.ListPowerProfile(datum_range(DAY0 + 1, DAY0 + 86400, unit=HOUR, n=6)))
    assert again == buckets  # deterministic


# ---------------------------------------------------------------------------
# Offer rounds


@pytest.mark.parametrize(
    "price, max_price, outcome, answers",
    [
        ("0.30", None, "accepted", ["accept"]),
        ("0.05", None, "rejected", ["reject"]),
        ("0.20", None, "accepted", ["counter", "accept"]),
        ("0.20", "0.22", "withdrawn", ["counter"]),
    ],
)
async def test_offer_round(price, max_price, outcome, answers):
    async with sim.Facility() as fac, sim.Exchange() as ex:
        rnd = await ex.run_offer_round(fac, sim.price_map(price=price), max_price=max_price)
        assert rnd.outcome == outcome and [s.answer for s in rnd.steps] == answers
        ids = [s.offer_id for s in rnd.steps]
        assert len(set(ids)) == len(ids)  # each counter is answered with a new offer id
        assert [fac.offers[i].decision.action for i in ids] == answers
        if answers[0] == "counter":
            assert sim.money.to_decimal(rnd.steps[0].counter.price.apparent_energy_price) == Decimal("0.25")
            assert fac.offer_status(ids[0]) == "REJECTED"
        final = {"accepted": "accepted", "rejected": "rejected", "withdrawn": "countered"}[outcome]
        assert ex.offers[ids[-1]].answer == final
        assert fac.calls["ProposePriceMapOffer"] == 1  # one stream per round


async def test_offer_round_through_a_resi_pair_and_status_life_cycle(resi_pair):
    now = [DAY0]
    async with sim.Facility(clock=lambda: now[0]) as fac:
        ex = sim.Exchange(clock=lambda: now[0])
        pair = await resi_pair(upstream=fac.address)
        client = esi.FacilityClient(pair.client)  # the typed client over the redundant pair
        rnd = await ex.run_offer_round(client, sim.price_map(price="0.20", duration=600), facility_uid=fac.uid, when=DAY0 + 60)
        assert rnd.outcome == "accepted" and [s.answer for s in rnd.steps] == ["counter", "accept"]
        statuses = []
        for t in (DAY0, DAY0 + 60, DAY0 + 659, DAY0 + 660):
            now[0] = t
            statuses.append(await ex.offer_status(client, rnd.offer_id))
        assert statuses == ["ACCEPTED", "EXECUTING", "EXECUTING", "COMPLETED"]
        assert await ex.offer_status(pair.client, rnd.steps[0].offer_id) == "REJECTED"  # the countered offer
        assert await ex.send_feedback(client, rnd.offer_id, "DISPUTED")
        assert fac.offers[rnd.offer_id].feedback == "DISPUTED"
        assert not await ex.send_feedback(client, rnd.steps[0].offer_id)  # no feedback on an offer not accepted
        assert fac.offers[rnd.steps[0].offer_id].feedback is None
        with pytest.raises(KeyError, match="made no offer"):
            await ex.offer_status(client, uuid.uuid4())


async def test_custom_policy_and_counter_limit():
    def always_counter(o):
        return sim.Decision.counter_with(o.price_map)

    async with sim.Facility(policy=always_counter, max_counter_offers=2) as fac, sim.Exchange() as ex:
        rnd = await ex.run_offer_round(fac)
        assert [s.answer for s in rnd.steps] == ["counter", "counter", "reject"] and rnd.outcome == "rejected"
        assert "no agreement after 2 counter-offers" in fac.offers[rnd.offer_id].decision.reason


# ---------------------------------------------------------------------------
# Registration end to end, registry lookup, pushes


async def test_registration_life_cycle_over_the_registry():
    ex = sim.Exchange(require_registration=True)
    reg = sim.Registry(exchanges=[ex])
    async with sim.serve([ex, reg]), sim.Facility(require_registration=True) as fac:
        [info] = await fac.lookup(reg)
        assert (info.uid, info.endpoint_uri) == (ex.uid, ex.address)
        # Before registration the exchange refuses the facility's route.
        with pytest.raises(resi.CallError) as e:
            await fac.provide_price_maps(info.endpoint_uri, exchange_uid=info.uid)
        assert e.value.code == resi.StatusCode.INVALID_ARGUMENT and "not registered" in e.value.details
        mine = await fac.register(info.endpoint_uri)
        assert (await fac.wait_registered(ex.uid)).status == "registered"
        theirs = await ex.wait_registration(fac.uid)
        assert theirs.status == "registered" and theirs.facility_nonce == mine.facility_nonce and len(mine.facility_nonce) == 24
        await fac.provide_characteristics(ex)
        await fac.provide_price_maps(ex)
        await fac.provide_programs(ex)
        assert ex.programs[fac.uid] == ["PEAK_CAPACITY_MANAGEMENT", "MARKET_PRICE_RESPONSE"] and fac.uid in ex.characteristics
        rnd = await ex.run_offer_round(fac)  # the price map the facility provided (0.25: accepted)
        assert rnd.outcome == "accepted"
        assert await fac.report_offer_status(ex, rnd.offer_id)
        assert ex.offers[rnd.offer_id].statuses == ["EXECUTING"]
        assert len(await fac.list_prices(ex, DAY0, DAY0 + 86400)) == 24 and len(await fac.list_prices(ex)) == 1
        sent = await ex.provide_prices(fac, DAY0, DAY0 + 3 * 3600)
        assert fac.prices == sent and len(sent) == 3
        # A second form from the same facility is refused with the reason.
        with pytest.raises(resi.CallError) as e:
            await fac.register(ex)
        assert "already registered" in e.value.details and fac.registrations[ex.uid].status == "refused"


async def test_a_refused_form_is_reported():
    async with sim.Exchange() as ex, sim.Facility() as fac:
        with pytest.raises(resi.CallError) as e:
            await fac.register(ex, answers={"uici": "nope"}, nonce=b"12345678")
        assert e.value.code == resi.StatusCode.INVALID_ARGUMENT and "data['uici']" in e.value.details


# ---------------------------------------------------------------------------
# Pure parts


def test_intervals_and_steps():
    assert interval_starts(10, 3600 * 3, Step(1, HOUR)) == [3600, 7200]
    assert interval_starts(0, 1, Step(1, 1)) == [0]
    assert most_recent_start(3600 * 5 + 10, Step(1, HOUR)) == 3600 * 4
    assert step_for(0, 0, Step(15, MINUTE)) == Step(15, MINUTE)
    assert step_for(esi.TimeUnit.Value("DAY"), 0, Step(15, MINUTE)).seconds == 86400
    with pytest.raises(sim.InvalidArgument, match="at most"):
        interval_starts(0, (MAX_INTERVALS + 1) * 60, Step(1, MINUTE))


def test_profile_and_prices_are_seeded():
    a, b = PowerProfile(seed=1), PowerProfile(seed=2)
    t = DAY0 + 3 * 3600
    assert a.mean(t, 900) == PowerProfile(seed=1).mean(t, 900) != b.mean(t, 900)
    noon, evening = a.real_power(DAY0 + 12 * 3600), a.real_power(DAY0 + 19 * 3600)
    assert noon < 0 < evening  # solar at noon exports, the evening peak draws
    p = PriceSchedule(seed=3)
    assert p.price(DAY0 + 18 * 3600) > p.price(DAY0 + 3 * 3600)
    assert p.price(DAY0) == PriceSchedule(seed=3).price(DAY0) and p.price(DAY0).as_tuple().exponent == -4


def test_policy_decisions():
    policy = sim.PriceFloorPolicy(accept_at="0.25", reject_below="0.10")
    assert policy.decide(offer("0.25")).action == "accept"
    assert policy.decide(offer("0.0999")).action == "reject"
    d = policy.decide(offer("0.15"))
    assert d.action == "counter" and d.counter.price.apparent_energy_price.nanos == 250_000_000
    eur = offer("1")
    eur.price_map.price.apparent_energy_price.currency_code = "EUR"
    assert policy.decide(eur).action == "reject"
    with pytest.raises(ValueError, match="reject_below"):
        sim.PriceFloorPolicy(accept_at="0.1", reject_below="0.2")
    with pytest.raises(ValueError, match="needs a price map"):
        sim.Decision("counter")


async def test_start_is_fast_and_listen_errors_are_clear():
    t0 = time.perf_counter()
    async with sim.Facility(), sim.Exchange(), sim.Registry():
        elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, elapsed
    async with sim.Facility() as fac:
        with pytest.raises(OSError, match="cannot listen on"):
            await sim.Facility(listen=fac.address).start()
    with pytest.raises(ValueError, match="host:port"):
        sim.serve([sim.Registry()], listen="nowhere")
    with pytest.raises(ValueError, match="each service once"):
        sim.serve([sim.Registry(), sim.Registry()])
    with pytest.raises(RuntimeError, match="not started"):
        sim.Facility().address
    assert repr(sim.Facility()) == "<Facility 'facility-1' not started>"
    async with sim.Registry() as reg:
        assert repr(reg) == f"<Registry {reg.address}>"
        with pytest.raises(RuntimeError, match="already served at " + reg.address):
            await reg.start()
        with pytest.raises(RuntimeError, match="already served"):
            await sim.serve([reg]).start()
        assert reg.calls == {}


async def test_offer_round_errors_and_offer_rows():
    async with sim.Facility(uid="fac-a") as fac, sim.Exchange() as ex:
        with pytest.raises(resi.CallError) as e:
            await ex.run_offer_round(fac.address, facility_uid="someone-else")
        assert e.value.code == resi.StatusCode.INVALID_ARGUMENT and "route.facility_uid: this node is 'fac-a', got 'someone-else'" in e.value.details
        with pytest.raises(ValueError, match="give facility_uid"):
            await ex.run_offer_round(fac.address)
        rnd = await ex.run_offer_round(fac.address, sim.price_map(price="0.15", real_power=5000), facility_uid="fac-a")
        assert rnd.outcome == "accepted"
        rows = fac.offer_rows()
        assert [(r["price"], r["decision"], r["status"], r["real_power"]) for r in rows] == [
            (Decimal("0.15"), "counter", "REJECTED", 5000),
            (Decimal("0.25"), "accept", "EXECUTING", 5000),
        ]
        assert rows[0]["offer_id"] == str(rnd.steps[0].offer_id) and "asking 0.25" in rows[0]["reason"]


async def test_the_documented_example_runs(capsys):
    """The first example of docs/python.md's "Simulator" section, as written."""
    import textwrap
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    section = doc[doc.index("## Simulator") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", section.index("```python") + 9)]
    namespace: dict = {}
    exec(compile("async def example():\n" + textwrap.indent(code, "    "), "docs/python.md", "exec"), namespace)
    await namespace["example"]()
    out = capsys.readouterr().out
    assert "accepted ['counter', 'accept']" in out and "EXECUTING" in out


async def test_a_failing_policy_answers_internal_and_the_facility_carries_on():
    def broken(o):
        raise RuntimeError("policy exploded")

    async with sim.Facility(policy=broken) as fac, sim.Exchange() as ex:
        with pytest.raises(resi.CallError) as e:
            await ex.run_offer_round(fac)
        assert e.value.code == resi.StatusCode.INTERNAL and "RuntimeError: policy exploded" in e.value.details
        fac.policy = sim.PriceFloorPolicy()
        assert (await ex.run_offer_round(fac)).outcome == "accepted"


async def test_facility_pushes_offer_statuses_to_the_exchange():
    """With report_status the facility reports ACCEPTED at once, EXECUTING
    at the offer's start and COMPLETED at its end (REJECTED for a refusal)."""
    async with sim.Exchange() as ex, sim.Facility(report_status=True) as fac:
        await fac.register(ex.address)
        await fac.wait_registered(ex.uid)
        t0 = time.time()
        rnd = await ex.run_offer_round(fac, sim.price_map(price="0.30", duration=0.3), when=t0 + 0.2)
        no = await ex.run_offer_round(fac, sim.price_map(price="0.01"))
        deadline = time.monotonic() + 5
        # Each report is a call of its own, recorded at the facility when
        # its answer is back: wait for every record (a loaded machine may
        # finish them in any order).
        def done() -> bool:
            return (
                len(ex.offers[rnd.offer_id].statuses) == 3
                and len(fac.offers[rnd.offer_id].reported) == 3
                and bool(ex.offers[no.offer_id].statuses)
            )

        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert ex.offers[rnd.offer_id].statuses == ["ACCEPTED", "EXECUTING", "COMPLETED"]
        assert time.time() - t0 >= 0.5  # COMPLETED came at the end, not before
        assert fac.offers[rnd.offer_id].reported == ["ACCEPTED", "EXECUTING", "COMPLETED"]
        assert ex.offers[no.offer_id].statuses == ["REJECTED"] and fac.offers[no.offer_id].report_error is None
        assert [(r["price"], r["answer"], r["statuses"]) for r in ex.offer_rows()] == [
            (Decimal("0.3"), "accepted", ["ACCEPTED", "EXECUTING", "COMPLETED"]),
            (Decimal("0.01"), "rejected", ["REJECTED"]),
        ]
    # No registration: nothing to report to, and the record says why.
    async with sim.Exchange() as ex, sim.Facility(report_status=True) as fac:
        rnd = await ex.run_offer_round(fac)
        await asyncio.sleep(0.05)
        assert ex.offers[rnd.offer_id].statuses == [] and "no endpoint known for exchange 'exchange-1'" in fac.offers[rnd.offer_id].report_error
