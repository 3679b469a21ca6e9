"""A user's ESI code: typed clients, messages and generated stubs over resi (mypy --strict must pass)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

import resi
import resi.aio
from resi.esi import (
    DatumRequest,
    DerRoute,
    Empty,
    FacilityClient,
    Money,
    PowerParameters,
    PowerProfileDatum,
    PriceComponents,
    PriceDatum,
    PriceMap,
    PriceMapOffer,
    PriceMapOfferResponse,
    SignedInt32Range,
    TimeUnit,
    Timestamp,
    Uuid,
)
from resi.esi._proto.solarnetwork.esi.service import der_facility_service_pb2_grpc as facility_grpc


async def prices() -> AsyncIterator[PriceDatum]:
    for units in range(3):
        yield PriceDatum(ts=Timestamp(seconds=1_700_000_000), time_unit=TimeUnit.Value("HOUR"),
                         price_components=PriceComponents(apparent_energy_price=Money(currency_code="NZD", units=units)))


async def main(paths: list[str]) -> None:
    async with await resi.Client.connect_redundant(paths) as client:
        facility = FacilityClient(client)
        route = DerRoute(exchange_uid="ex", facility_uid="fac")
        params: PowerParameters = await facility.get_power_parameters(route, timeout=5.0)
        low: int = params.voltage_range.min
        params.voltage_range.CopyFrom(SignedInt32Range(min=low, max=250))
        params = await facility.set_power_parameters(params, metadata=[("x-who", "me")])
        profile: list[PowerProfileDatum] = [d async for d in facility.list_power_profile(DatumRequest(route=route))]
        watts: int = sum(d.power_components.real_power for d in profile)
        done: Empty = await facility.provide_prices(prices())
        async with facility.propose_price_map_offer() as negotiation:
            sent: bool = await negotiation.send(PriceMapOffer(route=route, offer_id=Uuid(hi=1, lo=2), price_map=PriceMap()))
            answer: PriceMapOfferResponse | None = await negotiation.receive()
            if answer is not None and answer.WhichOneof("accept_oneof") == "counter_offer":
                counter: PriceMap = answer.counter_offer
                await negotiation.send(PriceMapOffer(offer_id=Uuid(hi=3), price_map=counter))
            await negotiation.done_writing()
            async for later in negotiation:
                accepted: bool = later.accept
        try:
            await facility.get_price_parameters(route)
        except resi.CallError as e:
            code: resi.StatusCode = e.code
            print(code, e.details, watts, done, sent, accepted)

        async with resi.aio.Channel(client) as channel:
            stub = facility_grpc.DerFacilityServiceStub(channel)
            again: PowerParameters = await stub.GetPowerParameters(route, timeout=5)
            async for datum in stub.ListPowerProfile(DatumRequest(route=route)):
                print(datum.time_length, again)
            try:
                await stub.SetPowerParameters(again)
            except grpc.aio.AioRpcError as err:
                status: grpc.StatusCode = err.code()
                print(status)


asyncio.run(main(["127.0.0.1:1", "127.0.0.1:2"]))
