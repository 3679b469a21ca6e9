"""A small grpcio ESI node for the typed-ESI tests: the three SolarNetwork
services on generated servicer base classes (the shipped ``*_pb2_grpc``),
in a ``grpc.aio`` server on 127.0.0.1, plus the three ways a resi client
reaches it (plain, through a gateway, redundant to an end gateway).

Its answers are computed from the requests, so a test that gets them right
shows the request arrived intact:

- ``GetPowerParameters`` echoes the route's ids into the ranges' bounds
  (``len(exchange_uid)``, ``len(facility_uid)``), sends ``x-seen`` (the
  request's ``x-who`` metadata) as a header and ``x-trailer`` as trailer;
  a route whose facility_uid is ``"missing"`` fails ``NOT_FOUND`` with a
  trailer; ``"slow"`` sleeps 5 s.
- ``ProposePriceMapOffer`` counters any offer above 10 units with 10 units
  and accepts (ending the call) an offer at or below 10.
- Client streams count what they got (``received``); server streams send
  ``time_unit_coalescence`` items.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

import resi
import resi.esi as esi
from resi.testing import FAST_TIMERS
from resi.esi._proto.solarnetwork.esi.service import (
    der_facility_exchange_pb2_grpc as exchange_grpc,
    der_facility_exchange_registry_pb2_grpc as registry_grpc,
    der_facility_service_pb2_grpc as facility_grpc,
)

FAST = FAST_TIMERS
COUNTER_UNITS = 10


def price_map(units: int) -> esi.PriceMap:
    return esi.PriceMap(
        power_components=esi.PowerComponents(real_power=-units * 1000, reactive_power=units),
        price=esi.PriceComponents(apparent_energy_price=esi.Money(currency_code="USD", units=units)),
    )


class Facility(facility_grpc.DerFacilityServiceServicer):
    def __init__(self, received: dict[str, list[Any]]) -> None:
        self.received = received

    async def CompleteDerFacilityRegistration(self, request: Any, context: Any) -> esi.Empty:
        self.received.setdefault("registration", []).append(request)
        return esi.Empty()

    async def ProposePriceMapOffer(self, request_iterator: Any, context: Any) -> AsyncIterator[esi.PriceMapOfferResponse]:
        async for offer in request_iterator:
            self.received.setdefault("offers", []).append(offer)
            units = offer.price_map.price.apparent_energy_price.units
            if units > COUNTER_UNITS:
                yield esi.PriceMapOfferResponse(offer_id=offer.offer_id, counter_offer=price_map(COUNTER_UNITS))
            else:
                yield esi.PriceMapOfferResponse(offer_id=offer.offer_id, accept=True)
                return

    async def GetPriceMapOfferStatus(self, request: Any, context: Any) -> esi.PriceMapOfferStatus:
        return esi.PriceMapOfferStatus(
            route=request.route, offer_id=request.offer_id, status=esi.PriceMapOfferStatus.Status.EXECUTING
        )

    async def ProvidePriceMapOfferFeedback(self, request: Any, context: Any) -> esi.PriceMapOfferFeedbackResponse:
        satisfied = request.obligation_status == esi.PriceMapOfferFeedback.ObligationStatus.SATISFIED
        return esi.PriceMapOfferFeedbackResponse(offer_id=request.offer_id, accepted=satisfied)

    async def ProvidePrices(self, request_iterator: Any, context: Any) -> esi.Empty:
        self.received["prices"] = [p async for p in request_iterator]
        return esi.Empty()

    async def ListPowerProfile(self, request: Any, context: Any) -> AsyncIterator[esi.PowerProfileDatum]:
        for i in range(request.time_unit_coalescence):
            yield esi.PowerProfileDatum(
                time_length=i, time_unit=request.time_unit,
                power_components=esi.PowerComponents(real_power=-i),
            )

    async def GetPowerParameters(self, request: Any, context: Any) -> esi.PowerParameters:
        if request.facility_uid == "missing":
            context.set_trailing_metadata([("x-why", "no such facility")])
            await context.abort(grpc.StatusCode.NOT_FOUND, f"facility {request.facility_uid!r} unknown")
        who = dict(context.invocation_metadata()).get("x-who", "")
        await context.send_initial_metadata([("x-seen", who)])
        context.set_trailing_metadata([("x-trailer", "t-value")])
        span = esi.SignedInt32Range(min=len(request.exchange_uid), max=len(request.facility_uid))
        return esi.PowerParameters(voltage_range=span, frequency_range=span)

    async def SetPowerParameters(self, request: Any, context: Any) -> esi.PowerParameters:
        answer = esi.PowerParameters()
        answer.CopyFrom(request)
        answer.voltage_range.max = min(request.voltage_range.max, 250)  # the facility caps it
        return answer

    async def GetPriceParameters(self, request: Any, context: Any) -> esi.PriceParameters:
        if request.facility_uid == "slow":
            await asyncio.sleep(5)
        return esi.PriceParameters(
            always_buy_below_price=esi.Money(currency_code="USD", nanos=500_000_000),
            avoid_buy_over_price=esi.Money(currency_code="USD", units=2),
        )


class Exchange(exchange_grpc.DerFacilityExchangeServicer):
    def __init__(self, received: dict[str, list[Any]]) -> None:
        self.received = received

    async def GetPublicCryptoKey(self, request: Any, context: Any) -> esi.CryptoKey:
        return esi.CryptoKey(algorithm="EC", encoding="X.509", key=b"\x30\x59key")

    async def GetDerFacilityRegistrationForm(self, request: Any, context: Any) -> esi.DerFacilityRegistrationForm:
        settings = [esi.FormSetting(type=esi.FormSetting.FormSettingType.TEXT, key="uici", label="UICI")]
        form = esi.Form(key="form-1", language_code=request.language_code, settings=settings)
        return esi.DerFacilityRegistrationForm(exchange_uid=request.exchange_uid, form=form)

    async def SubmitDerFacilityRegistrationForm(self, request: Any, context: Any) -> esi.DerFacilityRegistrationFormDataReceipt:
        self.received.setdefault("form_data", []).append(request)
        return esi.DerFacilityRegistrationFormDataReceipt(exchange_nonce=request.facility_nonce[::-1])

    async def _count(self, key: str, request_iterator: Any) -> esi.Empty:
        self.received[key] = [m async for m in request_iterator]
        return esi.Empty()

    async def ProvideDerCharacteristics(self, request_iterator: Any, context: Any) -> esi.Empty:
        return await self._count("characteristics", request_iterator)

    async def ProvidePriceMaps(self, request_iterator: Any, context: Any) -> esi.Empty:
        return await self._count("price_maps", request_iterator)

    async def ProvideSupportedDerPrograms(self, request_iterator: Any, context: Any) -> esi.Empty:
        return await self._count("programs", request_iterator)

    async def ProvidePriceMapOfferStatus(self, request: Any, context: Any) -> esi.PriceMapOfferStatusResponse:
        accepted = request.status == esi.PriceMapOfferStatus.Status.COMPLETED
        return esi.PriceMapOfferStatusResponse(route=request.route, offer_id=request.offer_id, accepted=accepted)

    async def ListPrices(self, request: Any, context: Any) -> AsyncIterator[esi.PriceDatum]:
        for i in range(request.time_unit_coalescence):
            yield esi.PriceDatum(route=request.route, time_length=i, time_unit=request.time_unit)


class Registry(registry_grpc.DerFacilityExchangeRegistryServicer):
    async def ListDerFacilityExchanges(self, request: Any, context: Any) -> AsyncIterator[esi.DerFacilityExchangeInfo]:
        for i in range(2):
            yield esi.DerFacilityExchangeInfo(
                name=f"exchange {i}", uid=f"ex-{i}", endpoint_uri=f"dns:///127.0.0.1:{9091 + i}",
                location=request.location,
            )


class EsiServices:
    """The grpcio server with all three services; ``received`` records client streams."""

    def __init__(self) -> None:
        self.received: dict[str, list[Any]] = {}
        self.server = aio.server()
        facility_grpc.add_DerFacilityServiceServicer_to_server(Facility(self.received), self.server)
        exchange_grpc.add_DerFacilityExchangeServicer_to_server(Exchange(self.received), self.server)
        registry_grpc.add_DerFacilityExchangeRegistryServicer_to_server(Registry(), self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"


@contextlib.asynccontextmanager
async def serve_esi() -> AsyncIterator[EsiServices]:
    node = EsiServices()
    await node.server.start()
    try:
        yield node
    finally:
        await node.server.stop(None)


@contextlib.asynccontextmanager
async def resi_client(mode: str, target: str) -> AsyncIterator[resi.Client]:
    """A resi client reaching ``target``: ``plain`` (straight), ``gateway``
    (through a resi gateway) or ``redundant`` (2 paths to an end gateway)."""
    if mode == "plain":
        async with await resi.Client.connect(target) as client:
            yield client
    elif mode == "gateway":
        async with resi.Gateway(listen="127.0.0.1:0", address=target) as gw:
            async with await resi.Client.connect(gw.address) as client:
                yield client
    else:
        async with resi.Gateway(listen=["127.0.0.1:0"] * 2, address=target, **FAST) as end:
            async with await resi.Client.connect_redundant(end.addresses, **FAST) as client:
                await both_paths_up(client)
                yield client


async def both_paths_up(client: resi.Client, timeout: float = 10.0) -> None:
    """Waits until the redundant session has its two paths up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats = await client.stats()
        if stats is not None and [p.state for p in stats.paths] == ["up", "up"]:
            return
        assert loop.time() < deadline, f"two paths not up within {timeout}s: {stats and stats.paths}"
        await asyncio.sleep(0.02)
