"""A simulated exchange: serves ``DerFacilityExchange`` (all eight RPCs)
with the reference registration checks, and, as a client, completes
registrations and runs offer rounds against facilities."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import grpc

from .. import esi
from . import _calls, _wire, money
from ._grpc import exchange_grpc
from ._server import Role, rpc
from .errors import InvalidArgument
from .facility import registration_token
from .keys import ALGORITHM, ENCODING, KeyPair, check_public_key
from .series import PriceSchedule, Step

log = logging.getLogger("resi.sim.exchange")

STATUS = esi.PriceMapOfferStatus.Status
SETTING = esi.FormSetting.FormSettingType

#: The registration form's key, and its fields with their syntax (the
#: reference exchange's demo form).
FORM_KEY = "resi-sim-registration"
FORM_FIELDS = {
    "uici": (re.compile(r"^[1-9]{3}-[1-9]{4}-[1-9]{4}$"), "123-1234-1234", "Utility interconnection customer identifier"),
    "cust-id": (re.compile(r"^[A-Z]{3}[0-9]{9}$"), "ABC123456789", "Customer number"),
    "cust-surname": (re.compile(r"\S"), "Doe", "Customer surname"),
}


def registration_form() -> esi.Form:
    """The exchange's registration form (English): an info text and the
    fields ``uici``, ``cust-id``, ``cust-surname``."""
    form = esi.Form(key=FORM_KEY, language_code="en-US")
    form.settings.add(type=SETTING.Value("INFO"), key="info", label="Register a facility with this exchange.")
    for key, (_, example, label) in FORM_FIELDS.items():
        form.settings.add(type=SETTING.Value("TEXT"), key=key, label=label, placeholder=example)
    return form


@dataclass
class FacilityRegistration:
    """A facility's registration as the exchange holds it: ``status`` is
    ``submitted``, then ``registered`` (or ``declined``) once
    ``CompleteDerFacilityRegistration`` went through, or ``failed`` with
    ``error`` if that call failed."""

    facility_uid: str
    endpoint_uri: str
    facility_nonce: bytes
    exchange_nonce: bytes
    facility_key: bytes
    form: dict[str, str]
    status: str = "submitted"
    error: Optional[str] = None
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


@dataclass
class OfferStep:
    """One offer of a round and the facility's answer: ``answer`` is
    ``accept``, ``reject`` or ``counter`` (then ``counter`` is the price map
    asked for)."""

    offer_id: uuid.UUID
    offer: esi.PriceMapOffer
    answer: str
    counter: Optional[esi.PriceMap] = None


@dataclass
class OfferRound:
    """What :meth:`Exchange.run_offer_round` did: the offers and answers in
    order and the ``outcome``: ``accepted`` or ``rejected`` (the facility's
    final answer) or ``withdrawn`` (the exchange would not pay a counter
    price and closed the stream)."""

    facility_uid: str
    steps: list[OfferStep]
    outcome: str

    @property
    def offer_id(self) -> uuid.UUID:
        """The id of the last offer (the accepted one on ``accepted``)."""
        return self.steps[-1].offer_id


@dataclass
class ExchangeOffer:
    """An offer this exchange made: to whom, the answer, and the statuses
    the facility reported through ``ProvidePriceMapOfferStatus``."""

    offer_id: uuid.UUID
    facility_uid: str
    offer: esi.PriceMapOffer
    answer: str = "pending"
    statuses: list[str] = field(default_factory=list)


class Exchange(Role, exchange_grpc.DerFacilityExchangeServicer):
    """A simulated exchange serving ``DerFacilityExchange``.

    ``uid`` is its exchange id; ``endpoint_uri`` is what a registry lists
    for it (default: its own address); ``prices`` is the schedule
    ``ListPrices`` and :meth:`provide_prices` serve (seeded by ``seed``);
    with ``auto_complete`` (the default, as the reference) every accepted
    registration form is completed at once by calling the facility back;
    with ``require_registration`` routes must name a registered facility.
    """

    service = "solarnetwork.esi.service.DerFacilityExchange"

    def __init__(
        self,
        *,
        listen: str = "127.0.0.1:0",
        uid: str = "exchange-1",
        name: str = "resi simulated exchange",
        endpoint_uri: Optional[str] = None,
        location: Optional[esi.Location] = None,
        prices: Optional[PriceSchedule] = None,
        seed: int = 0,
        step: Step = Step(1, 3),
        auto_complete: bool = True,
        require_registration: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(listen)
        self.uid = uid
        self.name = name
        self._endpoint_uri = endpoint_uri
        self.location = location if location is not None else esi.Location(country="US", time_zone="UTC")
        self.prices = prices if prices is not None else PriceSchedule(seed=seed)
        #: The native interval of ``ListPrices`` (time_unit INSTANT).
        self.step = step
        self.auto_complete = auto_complete
        self.require_registration = require_registration
        self.clock = clock
        self.keys = KeyPair.generate()
        self.form = registration_form()
        #: Registrations by facility uid.
        self.registrations: dict[str, FacilityRegistration] = {}
        #: What facilities provided, by facility uid.
        self.characteristics: dict[str, esi.DerCharacteristics] = {}
        self.price_maps: dict[str, list[esi.PriceMap]] = {}
        self.programs: dict[str, list[str]] = {}
        #: Offers made by :meth:`run_offer_round`, by offer id.
        self.offers: dict[uuid.UUID, ExchangeOffer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def endpoint_uri(self) -> str:
        """The gRPC target facilities use for this exchange."""
        return self._endpoint_uri or self.address

    def info(self) -> esi.DerFacilityExchangeInfo:
        """This exchange as a registry lists it."""
        return esi.DerFacilityExchangeInfo(name=self.name, uid=self.uid, endpoint_uri=self.endpoint_uri, location=self.location)

    def _register(self, server: grpc.aio.Server) -> None:
        exchange_grpc.add_DerFacilityExchangeServicer_to_server(self, server)

    async def stop(self, grace: Optional[float] = None) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().stop(grace)

    def _route(self, route: Any, field: str = "route") -> Any:
        _wire.check_route(route, exchange_uid=self.uid, field=field)
        if self.require_registration:
            _wire.require_registered(self.registrations, route.facility_uid, f"{field}.facility_uid", "exchange")
        return route

    # -- DerFacilityExchange --------------------------------------------------

    @rpc
    async def GetPublicCryptoKey(self, request: Any, context: Any) -> esi.CryptoKey:
        return esi.CryptoKey(algorithm=ALGORITHM, encoding=ENCODING, key=self.keys.public_der)

    @rpc
    async def GetDerFacilityRegistrationForm(self, request: Any, context: Any) -> esi.DerFacilityRegistrationForm:
        if request.exchange_uid and request.exchange_uid != self.uid:
            raise InvalidArgument(f"exchange_uid: this exchange is {self.uid!r}, got {request.exchange_uid!r}")
        return esi.DerFacilityRegistrationForm(exchange_uid=self.uid, form=self.form)

    @rpc
    async def SubmitDerFacilityRegistrationForm(self, request: Any, context: Any) -> esi.DerFacilityRegistrationFormDataReceipt:
        reg = self._check_registration(request)
        self.registrations[reg.facility_uid] = reg
        log.info("registration form from facility %s (endpoint %s) accepted", reg.facility_uid, reg.endpoint_uri)
        if self.auto_complete:
            task = asyncio.get_running_loop().create_task(self._auto_complete(reg.facility_uid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return esi.DerFacilityRegistrationFormDataReceipt(exchange_nonce=reg.exchange_nonce)

    def _check_registration(self, request: Any) -> FacilityRegistration:
        """The reference exchange's checks, in its order (esi-protocol.md §2.5)."""
        route = _wire.check_route(_wire.route_of(request), exchange_uid=self.uid)
        known = self.registrations.get(route.facility_uid)
        if known is not None and known.status in ("submitted", "registered"):
            raise InvalidArgument(f"route.facility_uid: {route.facility_uid!r} is already {known.status}")
        uri = request.facility_endpoint_uri.strip()
        if not uri:
            raise InvalidArgument("facility_endpoint_uri: missing")
        if not re.match(r"^[^\s:/]+:\d+$|^\[[0-9a-fA-F:]+\]:\d+$", _calls.address_of(uri)):
            raise InvalidArgument(f"facility_endpoint_uri: expected host:port or dns:///host:port, got {uri!r}")
        if not request.HasField("facility_public_key"):
            raise InvalidArgument("facility_public_key: missing")
        check_public_key(request.facility_public_key, "facility_public_key")
        nonce = bytes(request.facility_nonce)
        if not 8 <= len(nonce) <= 24:
            raise InvalidArgument(f"facility_nonce: must be 8 to 24 bytes long, got {len(nonce)}")
        if not request.HasField("data"):
            raise InvalidArgument("data: missing (the filled-in form)")
        if not request.data.key:
            raise InvalidArgument("data.key: missing")
        if request.data.key != self.form.key:
            raise InvalidArgument(f"data.key: unknown form {request.data.key!r}; this exchange's form is {self.form.key!r}")
        answers = dict(request.data.data)
        for key, (syntax, example, _) in FORM_FIELDS.items():
            value = answers.get(key, "").strip()
            if not value:
                raise InvalidArgument(f"data[{key!r}]: missing")
            if not syntax.search(value):
                raise InvalidArgument(f"data[{key!r}]: invalid syntax {value!r}; must look like {example}")
        return FacilityRegistration(
            facility_uid=route.facility_uid,
            endpoint_uri=uri,
            facility_nonce=nonce,
            exchange_nonce=os.urandom(24),
            facility_key=bytes(request.facility_public_key.key),
            form=answers,
        )

    async def _auto_complete(self, facility_uid: str) -> None:
        try:
            await self.complete_registration(facility_uid)
        except Exception as e:  # recorded on the registration, shown by inspection
            log.warning("completing the registration of %s failed: %s", facility_uid, e)

    @rpc
    async def ProvideDerCharacteristics(self, request_iterator: Any, context: Any) -> esi.Empty:
        got = {}
        async for c in request_iterator:
            route = self._route(_wire.route_of(c))
            for name in ("load_power_factor", "supply_power_factor"):
                v = getattr(c, name)
                if not -1.0 <= v <= 1.0:
                    raise InvalidArgument(f"{name}: must be between -1 and 1, got {v:g}")
            rt = c.response_time
            if _wire.seconds_of(rt.min) > _wire.seconds_of(rt.max):
                raise InvalidArgument("response_time: min is above max")
            got[route.facility_uid] = c
        self.characteristics.update(got)
        return esi.Empty()

    @rpc
    async def ProvidePriceMaps(self, request_iterator: Any, context: Any) -> esi.Empty:
        got: dict[str, list[esi.PriceMap]] = {}
        async for pmc in request_iterator:
            route = self._route(_wire.route_of(pmc))
            for i, pm in enumerate(pmc.price_map):
                _wire.check_price_map(pm, f"price_map[{i}]")
            got[route.facility_uid] = list(pmc.price_map)
        self.price_maps.update(got)
        return esi.Empty()

    @rpc
    async def ProvideSupportedDerPrograms(self, request_iterator: Any, context: Any) -> esi.Empty:
        got = {}
        async for ps in request_iterator:
            route = self._route(_wire.route_of(ps))
            for i, t in enumerate(ps.type):
                _wire.check_enum(esi.DerProgramType, t, f"type[{i}]")
            got[route.facility_uid] = [esi.DerProgramType.Name(t) for t in ps.type]
        self.programs.update(got)
        return esi.Empty()

    @rpc
    async def ProvidePriceMapOfferStatus(self, request: Any, context: Any) -> esi.PriceMapOfferStatusResponse:
        route = self._route(_wire.route_of(request))
        if not request.HasField("offer_id"):
            raise InvalidArgument("offer_id: missing")
        oid = _wire.uuid_of(request.offer_id, "offer_id")
        offer = self.offers.get(oid)
        if offer is None:
            raise InvalidArgument(f"offer_id: unknown offer {oid}")
        if offer.facility_uid != route.facility_uid:
            raise InvalidArgument(f"offer_id: offer {oid} was made to {offer.facility_uid!r}, not {route.facility_uid!r}")
        _wire.check_enum(STATUS, request.status, "status")
        offer.statuses.append(STATUS.Name(request.status))
        return esi.PriceMapOfferStatusResponse(
            route=esi.DerRoute(exchange_uid=self.uid, facility_uid=route.facility_uid), offer_id=request.offer_id, accepted=True
        )

    @rpc
    async def ListPrices(self, request: Any, context: Any) -> Any:
        route = self._route(_wire.route_of(request))
        starts, step = _wire.datum_intervals(request, self.clock(), self.step)
        for start in starts:
            yield self._price_datum(route.facility_uid, start, step)

    def _price_datum(self, facility_uid: str, start: float, step: Step) -> esi.PriceDatum:
        return esi.PriceDatum(
            route=esi.DerRoute(exchange_uid=self.uid, facility_uid=facility_uid),
            ts=_wire.timestamp(start),
            time_length=step.length,
            time_unit=esi.TimeUnit.ValueType(step.unit),
            price_components=esi.PriceComponents(apparent_energy_price=_wire.money_msg(self.prices.price(start), self.prices.currency)),
            location=self.location,
        )

    # -- client side ----------------------------------------------------------

    async def complete_registration(self, facility_uid: str, *, success: bool = True, target: Optional[_calls.Target] = None) -> None:
        """Calls the facility's ``CompleteDerFacilityRegistration`` (at its
        endpoint URI, or ``target``) with the registration token."""
        reg = self.registrations.get(facility_uid)
        if reg is None:
            raise KeyError(f"no registration from facility {facility_uid!r}")
        message = esi.DerFacilityRegistration(
            route=esi.DerRoute(exchange_uid=self.uid, facility_uid=facility_uid),
            success=success,
            registration_token=registration_token(reg.exchange_nonce, reg.facility_nonce, self.uid, facility_uid, reg.endpoint_uri),
        )
        try:
            async with _calls.typed(esi.FacilityClient, target if target is not None else reg.endpoint_uri) as facility:
                await facility.complete_der_facility_registration(message, timeout=10)
        except Exception as e:
            reg.status, reg.error = "failed", str(e)
            reg._done.set()
            raise
        reg.status = "registered" if success else "declined"
        reg._done.set()
        log.info("registration of facility %s completed: %s", facility_uid, reg.status)

    async def wait_registration(self, facility_uid: str, timeout: float = 10) -> FacilityRegistration:
        """Waits until the registration of ``facility_uid`` was completed
        (``registered``, ``declined`` or ``failed``)."""
        reg = self.registrations[facility_uid]
        try:
            await asyncio.wait_for(reg._done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"the registration of {facility_uid!r} was not completed within {timeout}s (status {reg.status})") from None
        return reg

    async def run_offer_round(
        self,
        facility: _calls.Target,
        price_map: Optional[esi.PriceMap] = None,
        *,
        facility_uid: Optional[str] = None,
        when: Optional[float] = None,
        max_price: Optional[money.Amount] = None,
        timeout: float = 30,
    ) -> OfferRound:
        """Negotiates one price map with ``facility`` over one
        ``ProposePriceMapOffer`` stream (esi-protocol.md §2.5): sends an
        offer, and on each counter-offer either sends a new offer (new id)
        with the counter price map, if its price is at most ``max_price``
        (no limit by default), or closes the stream. ``facility_uid``
        defaults to the uid of a :class:`~resi.sim.Facility` target;
        ``price_map`` to the first one the facility provided, else
        :func:`~resi.sim.price_map`; ``when`` (epoch seconds) to now."""
        from .facility import price_map as default_price_map

        uid = facility_uid or getattr(facility, "uid", None)
        if not uid:
            raise ValueError("run_offer_round: give facility_uid (the target is not a resi.sim.Facility)")
        if price_map is None:
            provided = self.price_maps.get(uid)
            price_map = provided[0] if provided else default_price_map()
        limit = money.amount(max_price) if max_price is not None else None
        start = self.clock() if when is None else when
        steps: list[OfferStep] = []

        def offer_for(pm: esi.PriceMap) -> esi.PriceMapOffer:
            oid = uuid.uuid4()
            msg = esi.PriceMapOffer(route=esi.DerRoute(exchange_uid=self.uid, facility_uid=uid), offer_id=_wire.uuid_msg(oid), when=_wire.timestamp(start), price_map=pm)
            self.offers[oid] = ExchangeOffer(offer_id=oid, facility_uid=uid, offer=msg)
            steps.append(OfferStep(offer_id=oid, offer=msg, answer="pending"))
            return msg

        async with _calls.typed(esi.FacilityClient, facility) as client, client.propose_price_map_offer(timeout=timeout) as negotiation:
            await negotiation.send(offer_for(price_map))
            while True:
                response = await negotiation.receive()
                step = steps[-1]
                if response is None:
                    raise RuntimeError(f"the facility closed the offer stream without answering offer {step.offer_id}")
                answered = _wire.uuid_of(response.offer_id, "offer_id") if response.HasField("offer_id") else None
                if answered != step.offer_id:
                    raise RuntimeError(f"the facility answered offer {answered}, expected {step.offer_id}")
                if response.WhichOneof("accept_oneof") == "counter_offer":
                    step.answer, step.counter = "counter", response.counter_offer
                    self.offers[step.offer_id].answer = "countered"
                    price = money.to_decimal(response.counter_offer.price.apparent_energy_price)
                    if limit is None or price <= limit:
                        await negotiation.send(offer_for(response.counter_offer))
                        continue
                    outcome = "withdrawn"
                else:
                    step.answer = "accept" if response.accept else "reject"
                    outcome = "accepted" if response.accept else "rejected"
                    self.offers[step.offer_id].answer = outcome
                break
            await negotiation.done_writing()  # this round is over
            while await negotiation.receive() is not None:
                pass  # the facility ends its side; an error would raise here
        return OfferRound(facility_uid=uid, steps=steps, outcome=outcome)

    async def provide_prices(self, facility: _calls.Target, start: float, end: float, *, facility_uid: Optional[str] = None) -> list[esi.PriceDatum]:
        """Pushes this exchange's prices for ``[start, end)`` to the facility
        (``ProvidePrices``); returns what was sent."""
        from .series import interval_starts

        uid = facility_uid or getattr(facility, "uid", None)
        if not uid:
            raise ValueError("provide_prices: give facility_uid (the target is not a resi.sim.Facility)")
        data = [self._price_datum(uid, t, self.step) for t in interval_starts(start, end, self.step)]
        async with _calls.typed(esi.FacilityClient, facility) as client:
            await client.provide_prices(data, timeout=10)
        return data

    def _offer_route(self, offer_id: uuid.UUID) -> esi.DerRoute:
        made = self.offers.get(offer_id)
        if made is None:
            raise KeyError(f"this exchange made no offer {offer_id}")
        return esi.DerRoute(exchange_uid=self.uid, facility_uid=made.facility_uid)

    async def offer_status(self, facility: _calls.Target, offer_id: uuid.UUID) -> str:
        """Asks the facility the status of an offer this exchange made
        (``GetPriceMapOfferStatus``); returns its name, e.g. ``EXECUTING``."""
        request = esi.PriceMapOfferStatusRequest(route=self._offer_route(offer_id), offer_id=_wire.uuid_msg(offer_id))
        async with _calls.typed(esi.FacilityClient, facility) as client:
            reply = await client.get_price_map_offer_status(request, timeout=10)
        return STATUS.Name(reply.status)

    async def send_feedback(self, facility: _calls.Target, offer_id: uuid.UUID, obligation: str = "SATISFIED") -> bool:
        """Tells the facility whether an offer's obligation was met
        (``ProvidePriceMapOfferFeedback``; ``SATISFIED``, ``DISPUTED`` or
        ``UNKNOWN``); returns whether the facility accepted the feedback."""
        kind = esi.PriceMapOfferFeedback.ObligationStatus
        feedback = esi.PriceMapOfferFeedback(route=self._offer_route(offer_id), offer_id=_wire.uuid_msg(offer_id), obligation_status=kind.Value(obligation))
        async with _calls.typed(esi.FacilityClient, facility) as client:
            reply = await client.provide_price_map_offer_feedback(feedback, timeout=10)
        return reply.accepted


__all__ = ["Exchange", "ExchangeOffer", "FacilityRegistration", "OfferRound", "OfferStep", "registration_form", "FORM_KEY"]
