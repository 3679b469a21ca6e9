"""Typed async clients of the three SolarNetwork ESI services over a resi Client.

Why a layer of its own: :class:`resi.Client` carries bytes (plainly, through
a gateway, or over redundant paths) and knows nothing of ESI; these classes
add the 18 methods with their message types, so user code gets messages
back and ``mypy --strict`` checks it. They need only ``protobuf``, not grpcio.

Shapes: unary methods return the response message; server streams return an
async iterator of messages; client streams take an iterable or async
iterable of messages and return the response; the one bidi RPC
(``ProposePriceMapOffer``) returns an :class:`OfferNegotiation`. Errors are
:class:`resi.CallError` as for the bytes API (plus ``INTERNAL`` when a reply
does not decode).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TypeVar, Union

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import DecodeError, Message

from .. import CallError, Client, Metadata, StatusCode, _resi
from ._proto.solarnetwork.esi.domain.crypto_key_pb2 import CryptoKey
from ._proto.solarnetwork.esi.domain.datum_request_pb2 import DatumRequest
from ._proto.solarnetwork.esi.domain.der_characteristics_pb2 import DerCharacteristics
from ._proto.solarnetwork.esi.domain.der_facility_exchange_info_pb2 import DerFacilityExchangeInfo
from ._proto.solarnetwork.esi.domain.der_facility_exchange_request_pb2 import DerFacilityExchangeRequest
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_data_pb2 import DerFacilityRegistrationFormData
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_data_receipt_pb2 import (
    DerFacilityRegistrationFormDataReceipt,
)
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_pb2 import DerFacilityRegistrationForm
from ._proto.solarnetwork.esi.domain.der_facility_registration_form_request_pb2 import (
    DerFacilityRegistrationFormRequest,
)
from ._proto.solarnetwork.esi.domain.der_facility_registration_pb2 import DerFacilityRegistration
from ._proto.solarnetwork.esi.domain.der_program_set_pb2 import DerProgramSet
from ._proto.solarnetwork.esi.domain.der_route_pb2 import DerRoute
from ._proto.solarnetwork.esi.domain.power_parameters_pb2 import PowerParameters
from ._proto.solarnetwork.esi.domain.power_profile_datum_pb2 import PowerProfileDatum
from ._proto.solarnetwork.esi.domain.price_datum_pb2 import PriceDatum
from ._proto.solarnetwork.esi.domain.price_map_characteristics_pb2 import PriceMapCharacteristics
from ._proto.solarnetwork.esi.domain.price_map_offer_feedback_pb2 import PriceMapOfferFeedback
from ._proto.solarnetwork.esi.domain.price_map_offer_feedback_response_pb2 import PriceMapOfferFeedbackResponse
from ._proto.solarnetwork.esi.domain.price_map_offer_pb2 import PriceMapOffer
from ._proto.solarnetwork.esi.domain.price_map_offer_response_pb2 import PriceMapOfferResponse
from ._proto.solarnetwork.esi.domain.price_map_offer_status_pb2 import PriceMapOfferStatus
from ._proto.solarnetwork.esi.domain.price_map_offer_status_request_pb2 import PriceMapOfferStatusRequest
from ._proto.solarnetwork.esi.domain.price_map_offer_status_response_pb2 import PriceMapOfferStatusResponse
from ._proto.solarnetwork.esi.domain.price_parameters_pb2 import PriceParameters

__all__ = ["ExchangeClient", "FacilityClient", "OfferNegotiation", "RegistryClient"]

M = TypeVar("M", bound=Message)
#: Request messages of a client stream: an iterable or an async iterable.
Stream = Union[Iterable[M], AsyncIterable[M]]

_SERVICE = "/solarnetwork.esi.service."
FACILITY = _SERVICE + "DerFacilityService/"
EXCHANGE = _SERVICE + "DerFacilityExchange/"
REGISTRY = _SERVICE + "DerFacilityExchangeRegistry/"


def decode(cls: type[M], data: bytes) -> M:
    """``cls`` parsed from ``data``; a reply that does not parse fails the call."""
    try:
        return cls.FromString(data)
    except DecodeError as e:
        raise CallError(StatusCode.INTERNAL, f"cannot decode {cls.DESCRIPTOR.full_name}: {e}") from None


async def _encoded(messages: Stream[M]) -> AsyncIterator[bytes]:
    if isinstance(messages, AsyncIterable):
        async for m in messages:
            yield m.SerializeToString()
    else:
        for m in messages:
            yield m.SerializeToString()


class _Service:
    """Calls on one resi client with typed messages (the shared plumbing)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def client(self) -> Client:
        """The resi client the calls go over."""
        return self._client

    async def _unary(
        self, path: str, request: Message, reply: type[M], timeout: float | None, metadata: Metadata | None
    ) -> M:
        data = await self._client.unary(path, request.SerializeToString(), timeout=timeout, metadata=metadata)
        return decode(reply, data)

    async def _server_stream(
        self, path: str, request: Message, reply: type[M], timeout: float | None, metadata: Metadata | None
    ) -> AsyncIterator[M]:
        replies = self._client.server_stream(path, request.SerializeToString(), timeout=timeout, metadata=metadata)
        async for data in replies:
            yield decode(reply, data)

    async def _client_stream(
        self, path: str, requests: Stream[M], reply: type[Empty], timeout: float | None, metadata: Metadata | None
    ) -> Empty:
        data = await self._client.client_stream(path, _encoded(requests), timeout=timeout, metadata=metadata)
        return decode(reply, data)


class OfferNegotiation:
    """One ``ProposePriceMapOffer`` call: the exchange sends offers, the
    facility answers each with accept/reject or a counter-offer.

    ``await send(offer)``, ``await receive()`` (None once the facility ended
    the call with OK), ``await done_writing()`` (no more offers), ``async
    for response in negotiation``, ``cancel()``, and the call's metadata.
    ``async with`` ends writing on exit and cancels the call if it is still
    running then.
    """

    def __init__(self, call: _resi.Call) -> None:
        self._call = call
        self._ended = False

    async def send(self, offer: PriceMapOffer) -> bool:
        """Sends one offer; False if the call no longer takes offers (it
        ended: :meth:`receive` tells how)."""
        return await self._call.send(offer.SerializeToString())

    async def receive(self) -> PriceMapOfferResponse | None:
        """The next response, or None when the call ended with OK; raises
        :class:`resi.CallError` if it failed."""
        data = await self._call.receive()
        if data is None:
            self._ended = True
            return None
        return decode(PriceMapOfferResponse, data)

    async def done_writing(self) -> None:
        """Half-closes: tells the facility no more offers follow."""
        self._call.close_send()

    def cancel(self) -> None:
        """Cancels the call (the facility sees CANCELLED)."""
        self._call.cancel()

    async def initial_metadata(self) -> list[tuple[str, str | bytes]]:
        """Response headers (waits for them)."""
        return await self._call.initial_metadata()

    def trailing_metadata(self) -> list[tuple[str, str | bytes]] | None:
        """Trailers of a call that ended with OK (None before)."""
        return self._call.trailing_metadata()

    def __aiter__(self) -> AsyncIterator[PriceMapOfferResponse]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[PriceMapOfferResponse]:
        while (response := await self.receive()) is not None:
            yield response

    async def __aenter__(self) -> OfferNegotiation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._call.close_send()
        if not self._ended:
            self._call.cancel()


class FacilityClient(_Service):
    """``DerFacilityService``, served by a facility; called by an exchange."""

    async def complete_der_facility_registration(
        self, registration: DerFacilityRegistration, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Empty:
        """The exchange's verdict on a submitted registration."""
        return await self._unary(FACILITY + "CompleteDerFacilityRegistration", registration, Empty, timeout, metadata)

    def propose_price_map_offer(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> OfferNegotiation:
        """Opens the offer negotiation (bidi); see :class:`OfferNegotiation`."""
        path = FACILITY + "ProposePriceMapOffer"
        return OfferNegotiation(self._client.call(path, None, timeout=timeout, metadata=metadata))

    async def get_price_map_offer_status(
        self, request: PriceMapOfferStatusRequest, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> PriceMapOfferStatus:
        return await self._unary(FACILITY + "GetPriceMapOfferStatus", request, PriceMapOfferStatus, timeout, metadata)

    async def provide_price_map_offer_feedback(
        self, feedback: PriceMapOfferFeedback, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> PriceMapOfferFeedbackResponse:
        path = FACILITY + "ProvidePriceMapOfferFeedback"
        return await self._unary(path, feedback, PriceMapOfferFeedbackResponse, timeout, metadata)

    async def provide_prices(
        self, prices: Stream[PriceDatum], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Empty:
        """Client stream: sends every datum of ``prices``."""
        return await self._client_stream(FACILITY + "ProvidePrices", prices, Empty, timeout, metadata)

    def list_power_profile(
        self, request: DatumRequest, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> AsyncIterator[PowerProfileDatum]:
        """Server stream: ``async for datum in facility.list_power_profile(request)``."""
        return self._server_stream(FACILITY + "ListPowerProfile", request, PowerProfileDatum, timeout, metadata)

    async def get_power_parameters(
        self, route: DerRoute, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> PowerParameters:
        return await self._unary(FACILITY + "GetPowerParameters", route, PowerParameters, timeout, metadata)

    async def set_power_parameters(
        self, parameters: PowerParameters, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> PowerParameters:
        """Returns the parameters in force afterwards."""
        return await self._unary(FACILITY + "SetPowerParameters", parameters, PowerParameters, timeout, metadata)

    async def get_price_parameters(
        self, route: DerRoute, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> PriceParameters:
        return await self._unary(FACILITY + "GetPriceParameters", route, PriceParameters, timeout, metadata)


class ExchangeClient(_Service):
    """``DerFacilityExchange``, served by an exchange; called by a facility."""

    async def get_public_crypto_key(
        self, request: Empty | None = None, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> CryptoKey:
        return await self._unary(EXCHANGE + "GetPublicCryptoKey", request or Empty(), CryptoKey, timeout, metadata)

    async def get_der_facility_registration_form(
        self,
        request: DerFacilityRegistrationFormRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> DerFacilityRegistrationForm:
        path = EXCHANGE + "GetDerFacilityRegistrationForm"
        return await self._unary(path, request, DerFacilityRegistrationForm, timeout, metadata)

    async def submit_der_facility_registration_form(
        self,
        form_data: DerFacilityRegistrationFormData,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> DerFacilityRegistrationFormDataReceipt:
        path = EXCHANGE + "SubmitDerFacilityRegistrationForm"
        return await self._unary(path, form_data, DerFacilityRegistrationFormDataReceipt, timeout, metadata)

    async def provide_der_characteristics(
        self, characteristics: Stream[DerCharacteristics], *, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Empty:
        path = EXCHANGE + "ProvideDerCharacteristics"
        return await self._client_stream(path, characteristics, Empty, timeout, metadata)

    async def provide_price_maps(
        self, price_maps: Stream[PriceMapCharacteristics], *, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Empty:
        return await self._client_stream(EXCHANGE + "ProvidePriceMaps", price_maps, Empty, timeout, metadata)

    async def provide_supported_der_programs(
        self, programs: Stream[DerProgramSet], *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Empty:
        path = EXCHANGE + "ProvideSupportedDerPrograms"
        return await self._client_stream(path, programs, Empty, timeout, metadata)

    async def provide_price_map_offer_status(
        self, status: PriceMapOfferStatus, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> PriceMapOfferStatusResponse:
        path = EXCHANGE + "ProvidePriceMapOfferStatus"
        return await self._unary(path, status, PriceMapOfferStatusResponse, timeout, metadata)

    def list_prices(
        self, request: DatumRequest, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> AsyncIterator[PriceDatum]:
        return self._server_stream(EXCHANGE + "ListPrices", request, PriceDatum, timeout, metadata)


class RegistryClient(_Service):
    """``DerFacilityExchangeRegistry``: the directory of exchanges."""

    def list_der_facility_exchanges(
        self, request: DerFacilityExchangeRequest, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> AsyncIterator[DerFacilityExchangeInfo]:
        path = REGISTRY + "ListDerFacilityExchanges"
        return self._server_stream(path, request, DerFacilityExchangeInfo, timeout, metadata)
