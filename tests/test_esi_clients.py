"""The typed ESI clients (resi.esi) against a grpcio ESI node, over a plain
resi client, through a resi gateway, and over two redundant paths; and what
both typed layers (clients, resi.aio) do with a reply that does not decode.

Every one of the 18 RPCs is called; answers are computed by the node from
the requests (see esi_servicer), so each assertion shows the typed request
crossed and the typed response came back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

import resi
import resi.aio
import resi.esi as esi
from esi_servicer import COUNTER_UNITS, EsiServices, price_map, resi_client
from resi.esi._proto.solarnetwork.esi.service import der_facility_service_pb2_grpc as facility_grpc

MODES = ["plain", "gateway", "redundant"]
ROUTE = esi.DerRoute(exchange_uid="ex-1", facility_uid="facility-42")
OFFER_ID = esi.Uuid(hi=0x0123456789ABCDEF, lo=0xFEDCBA9876543210)


@pytest.mark.parametrize("mode", MODES)
async def test_facility_unary_and_streams(esi_services: EsiServices, mode: str) -> None:
    async with resi_client(mode, esi_services.address) as client:
        facility = esi.FacilityClient(client)
        assert facility.client is client

        params = await facility.get_power_parameters(ROUTE, timeout=10)
        assert isinstance(params, esi.PowerParameters)
        assert (params.voltage_range.min, params.voltage_range.max) == (4, 11)

        wanted = esi.PowerParameters(voltage_range=esi.SignedInt32Range(min=-230, max=400))
        assert (await facility.set_power_parameters(wanted)).voltage_range.max == 250

        prices = await facility.get_price_parameters(ROUTE, metadata=[("x-who", "test")])
        assert prices.always_buy_below_price.nanos == 500_000_000 and prices.avoid_buy_over_price.units == 2

        registration = esi.DerFacilityRegistration(route=ROUTE, success=True, registration_token=b"\x00" * 32)
        assert await facility.complete_der_facility_registration(registration) == esi.Empty()
        assert esi_services.received["registration"] == [registration]

        status = await facility.get_price_map_offer_status(esi.PriceMapOfferStatusRequest(route=ROUTE, offer_id=OFFER_ID))
        assert status.status == esi.PriceMapOfferStatus.Status.EXECUTING and status.offer_id == OFFER_ID

        feedback = esi.PriceMapOfferFeedback(
            offer_id=OFFER_ID, obligation_status=esi.PriceMapOfferFeedback.ObligationStatus.SATISFIED
        )
        assert (await facility.provide_price_map_offer_feedback(feedback)).accepted

        request = esi.DatumRequest(route=ROUTE, time_unit=esi.TimeUnit.Value("MINUTE"), time_unit_coalescence=5)
        profile = [d async for d in facility.list_power_profile(request)]
        assert [d.power_components.real_power for d in profile] == [0, -1, -2, -3, -4]
        assert all(d.time_unit == esi.TimeUnit.Value("MINUTE") for d in profile)

        data = [esi.PriceDatum(route=ROUTE, time_length=i) for i in range(3)]
        assert await facility.provide_prices(data) == esi.Empty()  # a plain iterable
        assert esi_services.received["prices"] == data

        async def later() -> AsyncIterator[esi.PriceDatum]:
            for d in data[:2]:
                yield d

        await facility.provide_prices(later())  # an async iterable
        assert esi_services.received["prices"] == data[:2]


@pytest.mark.parametrize("mode", MODES)
async def test_offer_negotiation_counter_then_accept(esi_services: EsiServices, mode: str) -> None:
    async with resi_client(mode, esi_services.address) as client:
        facility = esi.FacilityClient(client)
        async with facility.propose_price_map_offer(timeout=10) as negotiation:
            assert await negotiation.send(esi.PriceMapOffer(route=ROUTE, offer_id=OFFER_ID, price_map=price_map(25)))
            counter = await negotiation.receive()
            assert counter is not None and counter.WhichOneof("accept_oneof") == "counter_offer"
            assert counter.offer_id == OFFER_ID
            assert counter.counter_offer.price.apparent_energy_price.units == COUNTER_UNITS

            second = esi.Uuid(hi=1, lo=2)
            await negotiation.send(esi.PriceMapOffer(route=ROUTE, offer_id=second, price_map=counter.counter_offer))
            final = await negotiation.receive()
            assert final is not None and final.WhichOneof("accept_oneof") == "accept" and final.accept
            assert final.offer_id == second
            await negotiation.done_writing()
            assert await negotiation.receive() is None  # the facility ended the call with OK
            assert negotiation.trailing_metadata() is not None
        assert [o.offer_id for o in esi_services.received["offers"]] == [OFFER_ID, second]


async def test_offer_negotiation_by_iteration_and_cancel(esi_services: EsiServices) -> None:
    async with resi_client("redundant", esi_services.address) as client:
        facility = esi.FacilityClient(client)
        negotiation = facility.propose_price_map_offer()
        await negotiation.send(esi.PriceMapOffer(offer_id=OFFER_ID, price_map=price_map(3)))
        await negotiation.done_writing()
        answers = [r async for r in negotiation]
        assert [r.accept for r in answers] == [True]

        open_one = facility.propose_price_map_offer()
        await open_one.send(esi.PriceMapOffer(offer_id=OFFER_ID, price_map=price_map(99)))
        assert (await open_one.receive()) is not None  # a counter-offer: still open
        open_one.cancel()
        with pytest.raises(resi.CallError) as err:
            await open_one.receive()
        assert err.value.code == resi.StatusCode.CANCELLED


@pytest.mark.parametrize("mode", MODES)
async def test_exchange_and_registry(esi_services: EsiServices, mode: str) -> None:
    async with resi_client(mode, esi_services.address) as client:
        exchange = esi.ExchangeClient(client)
        key = await exchange.get_public_crypto_key()
        assert (key.algorithm, key.encoding, key.key) == ("EC", "X.509", b"\x30\x59key")

        form = await exchange.get_der_facility_registration_form(
            esi.DerFacilityRegistrationFormRequest(exchange_uid="ex-1", language_code="en-NZ")
        )
        assert form.exchange_uid == "ex-1" and form.form.language_code == "en-NZ"
        assert form.form.settings[0].type == esi.FormSetting.FormSettingType.TEXT

        form_data = esi.DerFacilityRegistrationFormData(
            route=ROUTE, facility_endpoint_uri="dns:///127.0.0.1:9092", facility_nonce=b"12345678",
            facility_public_key=key, data=esi.FormData(key="form-1", data={"uici": "123", "cust-id": "c"}),
        )
        receipt = await exchange.submit_der_facility_registration_form(form_data)
        assert receipt.exchange_nonce == b"87654321"
        assert esi_services.received["form_data"] == [form_data]

        characteristics = [esi.DerCharacteristics(route=ROUTE, load_power_max=5000, load_power_factor=0.5)]
        await exchange.provide_der_characteristics(characteristics)
        maps = [esi.PriceMapCharacteristics(route=ROUTE, price_map=[price_map(1), price_map(2)])]
        await exchange.provide_price_maps(maps)
        programs = [esi.DerProgramSet(route=ROUTE, type=[esi.DerProgramType.Value("RAMPING")])] * 2
        await exchange.provide_supported_der_programs(programs)
        assert esi_services.received["characteristics"] == characteristics
        assert esi_services.received["price_maps"] == maps
        assert esi_services.received["programs"] == programs

        done = esi.PriceMapOfferStatus(route=ROUTE, offer_id=OFFER_ID, status=esi.PriceMapOfferStatus.Status.COMPLETED)
        assert (await exchange.provide_price_map_offer_status(done)).accepted

        prices = [p async for p in exchange.list_prices(esi.DatumRequest(route=ROUTE, time_unit_coalescence=3))]
        assert [p.time_length for p in prices] == [0, 1, 2] and all(p.route == ROUTE for p in prices)

        registry = esi.RegistryClient(client)
        where = esi.DerFacilityExchangeRequest(location=esi.Location(country="NZ", time_zone="Pacific/Auckland"))
        exchanges = [x async for x in registry.list_der_facility_exchanges(where)]
        assert [x.uid for x in exchanges] == ["ex-0", "ex-1"]
        assert all(x.location.country == "NZ" for x in exchanges)


@pytest.mark.parametrize("mode", MODES)
async def test_errors_are_call_errors(esi_services: EsiServices, mode: str) -> None:
    async with resi_client(mode, esi_services.address) as client:
        facility = esi.FacilityClient(client)
        with pytest.raises(resi.CallError) as err:
            await facility.get_power_parameters(esi.DerRoute(facility_uid="missing"))
        assert err.value.code == resi.StatusCode.NOT_FOUND
        assert "'missing' unknown" in err.value.details
        assert ("x-why", "no such facility") in err.value.trailers

        with pytest.raises(resi.CallError) as slow:
            await facility.get_price_parameters(esi.DerRoute(facility_uid="slow"), timeout=0.3)
        assert slow.value.code == resi.StatusCode.DEADLINE_EXCEEDED


async def test_a_reply_that_does_not_decode_fails_internal() -> None:
    """A server answering bytes that are not the expected message."""
    truncated = b"\x0a\xff"  # field 1, length 255, no data
    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: truncated)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("solarnetwork.esi.service.DerFacilityService", {"GetPowerParameters": handler})]
    )
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        async with resi_client("plain", address) as client:
            with pytest.raises(resi.CallError) as err:
                await esi.FacilityClient(client).get_power_parameters(ROUTE)
            assert err.value.code == resi.StatusCode.INTERNAL
            assert "solarnetwork.esi.domain.PowerParameters" in err.value.details
            stub = facility_grpc.DerFacilityServiceStub(resi.aio.Channel(client))
            with pytest.raises(aio.AioRpcError) as aio_err:
                await stub.GetPowerParameters(ROUTE)
            assert aio_err.value.code() == grpc.StatusCode.INTERNAL
            assert "deserializing" in (aio_err.value.details() or "")
    finally:
        await server.stop(None)
