"""Deliberately wrong ESI code: mypy --strict must report each marked line.

Each ``# E: code`` marks a line where mypy must report that error code.
"""

from __future__ import annotations

import resi
import resi.aio
from resi.esi import DatumRequest, DerRoute, FacilityClient, PriceMapOffer, PriceParameters, RegistryClient
from resi.esi._proto.solarnetwork.esi.service import der_facility_service_pb2_grpc as facility_grpc


async def main(client: resi.Client) -> None:
    facility = FacilityClient(client)
    route = DerRoute(exchange_uid="ex", facility_uid=7)  # E: arg-type
    wrong: PriceParameters = await facility.get_power_parameters(route)  # E: assignment
    await facility.set_power_parameters(route)  # E: arg-type
    params = await facility.get_power_parameters(route)
    params.voltage_range.min = "low"  # E: assignment
    async for datum in facility.list_power_profile(route):  # E: arg-type
        print(datum.no_such_field)  # E: attr-defined
    await facility.provide_prices([route])  # E: list-item
    negotiation = facility.propose_price_map_offer()
    await negotiation.send(DatumRequest())  # E: arg-type
    answer = await negotiation.receive()
    print(answer.accept)  # E: union-attr
    await RegistryClient(client).list_der_facility_exchanges(DatumRequest())  # E: misc arg-type
    stub = facility_grpc.DerFacilityServiceStub(resi.aio.Channel(client))
    offer: PriceMapOffer = await stub.GetPowerParameters(route)  # E: assignment
    print(wrong, offer)
