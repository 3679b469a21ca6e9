"""A simulated DER facility: serves ``DerFacilityService`` (all nine RPCs)
and, as a client, registers with exchanges."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import grpc

from .. import esi
from ._grpc import facility_grpc
from . import _calls, _wire, money
from ._server import Role, rpc
from .errors import InvalidArgument
from .keys import ALGORITHM, ENCODING, KeyPair
from .policy import Decision, PolicyLike, as_policy
from .series import PowerProfile, Step

log = logging.getLogger("resi.sim.facility")

STATUS = esi.PriceMapOfferStatus.Status
#: What :meth:`Facility.register` answers in the exchange's form unless told
#: otherwise (valid for the simulated exchange's form).
FORM_ANSWERS = {"uici": "123-4567-8912", "cust-id": "ABC123456789", "cust-surname": "Doe"}
OBLIGATION = esi.PriceMapOfferFeedback.ObligationStatus


@dataclass(frozen=True)
class PowerLimits:
    """The ranges ``SetPowerParameters`` may ask for (inclusive): voltage in
    V, power factor, frequency in Hz."""

    voltage: tuple[int, int] = (200, 280)
    power_factor: tuple[float, float] = (0.8, 1.0)
    frequency: tuple[int, int] = (55, 65)


def default_power_parameters() -> esi.PowerParameters:
    """240 V ± 5 %, power factor 0.9 to 1, 59 to 61 Hz."""
    return esi.PowerParameters(
        voltage_range=esi.SignedInt32Range(min=228, max=252),
        power_factor_range=esi.FloatRange(min=0.9, max=1.0),
        frequency_range=esi.SignedInt32Range(min=59, max=61),
    )


def price_map(
    real_power: int = 10_000,
    reactive_power: int = 0,
    duration: float = 900,
    price: money.Amount = "0.25",
    currency: str = "USD",
    response_time: tuple[float, float] = (5, 60),
) -> esi.PriceMap:
    """A ``PriceMap``: ``real_power`` W / ``reactive_power`` VAR held for
    ``duration`` seconds, reached within ``response_time`` seconds, at
    ``price`` per unit of energy."""
    pm = esi.PriceMap(power_components=esi.PowerComponents(real_power=real_power, reactive_power=reactive_power))
    pm.duration.FromNanoseconds(round(duration * 1e9))
    pm.response_time.min.FromNanoseconds(round(response_time[0] * 1e9))
    pm.response_time.max.FromNanoseconds(round(response_time[1] * 1e9))
    pm.price.apparent_energy_price.CopyFrom(_wire.money_msg(price, currency))
    return pm


@dataclass
class OfferRecord:
    """One offer the facility answered: the offer, the policy's decision,
    when it arrived, and the exchange's feedback (an ``ObligationStatus``
    name) once given."""

    offer_id: uuid.UUID
    offer: esi.PriceMapOffer
    decision: Decision
    received: float
    feedback: Optional[str] = None

    @property
    def start(self) -> float:
        return _wire.seconds_of(self.offer.when) if self.offer.HasField("when") else self.received

    def status(self, now: float) -> str:
        """``ACCEPTED`` until ``when``, ``EXECUTING`` for the price map's
        duration, then ``COMPLETED``; ``REJECTED`` for a rejected or
        counter-offered offer."""
        if self.decision.action != "accept":
            return "REJECTED"
        if now < self.start:
            return "ACCEPTED"
        end = self.start + self.offer.price_map.duration.ToNanoseconds() / 1e9
        return "EXECUTING" if now < end else "COMPLETED"


@dataclass
class ExchangeRegistration:
    """The facility's side of a registration with one exchange: ``status``
    is ``pending`` after the form was submitted, then ``registered`` or
    ``declined`` when the exchange completed it."""

    exchange_uid: str
    exchange_endpoint: str
    exchange_key: bytes
    facility_nonce: bytes
    exchange_nonce: bytes
    endpoint_uri: str
    status: str = "pending"
    _receipt: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def token(self, facility_uid: str) -> bytes:
        """The registration token the exchange must send back (§3.3)."""
        return registration_token(self.exchange_nonce, self.facility_nonce, self.exchange_uid, facility_uid, self.endpoint_uri)


def default_characteristics() -> esi.DerCharacteristics:
    """20 kW load, 10 kW supply, power factors 0.95, 13.5 kWh storage,
    responds within 5 to 60 s."""
    c = esi.DerCharacteristics(
        load_power_max=20_000, load_power_factor=0.95, supply_power_max=10_000, supply_power_factor=0.95, storage_energy_capacity=13_500
    )
    c.response_time.min.FromSeconds(5)
    c.response_time.max.FromSeconds(60)
    return c


def registration_token(exchange_nonce: bytes, facility_nonce: bytes, exchange_uid: str, facility_uid: str, endpoint_uri: str) -> bytes:
    """SHA-256 over exchange nonce ‖ facility nonce ‖ exchange uid ‖ facility
    uid ‖ facility endpoint URI (UTF-8), as the reference computes it."""
    h = hashlib.sha256(exchange_nonce + facility_nonce)
    for s in (exchange_uid, facility_uid, endpoint_uri):
        h.update(s.encode())
    return h.digest()


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6


class Facility(Role, facility_grpc.DerFacilityServiceServicer):
    """A simulated facility serving ``DerFacilityService``.

    ``uid`` is its facility id (routes must name it); ``limits`` bound what
    ``SetPowerParameters`` accepts; ``profile`` is its power over time
    (seeded by ``seed`` unless given); ``policy`` answers offers (default
    :class:`~resi.sim.PriceFloorPolicy`); ``price_maps`` are what it offers
    exchanges. With ``require_registration`` routes must name an exchange
    it completed a registration with. ``clock`` gives "now" in seconds.
    """

    service = "solarnetwork.esi.service.DerFacilityService"

    def __init__(
        self,
        *,
        listen: str = "127.0.0.1:0",
        uid: str = "facility-1",
        limits: PowerLimits = PowerLimits(),
        power_parameters: Optional[esi.PowerParameters] = None,
        price_parameters: Optional[esi.PriceParameters] = None,
        price_maps: Optional[Iterable[esi.PriceMap]] = None,
        characteristics: Optional[esi.DerCharacteristics] = None,
        programs: Iterable[str] = ("PEAK_CAPACITY_MANAGEMENT", "MARKET_PRICE_RESPONSE"),
        policy: Optional[PolicyLike] = None,
        profile: Optional[PowerProfile] = None,
        seed: int = 0,
        step: Step = Step(15, 2),
        max_counter_offers: int = 5,
        require_registration: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(listen)
        self.uid = uid
        self.limits = limits
        #: The power parameters in force.
        self.power_parameters = power_parameters if power_parameters is not None else default_power_parameters()
        #: What ``GetPriceParameters`` answers.
        self.price_parameters = price_parameters if price_parameters is not None else esi.PriceParameters(
            always_buy_below_price=_wire.money_msg("0.05", "USD"), avoid_buy_over_price=_wire.money_msg("0.30", "USD")
        )
        #: The price maps this facility offers (sent by :meth:`provide_price_maps`).
        self.price_maps = list(price_maps) if price_maps is not None else [price_map()]
        #: What :meth:`provide_characteristics` sends (without its route).
        self.characteristics = characteristics if characteristics is not None else default_characteristics()
        #: ``DerProgramType`` names :meth:`provide_programs` sends.
        self.programs = [esi.DerProgramType.Name(esi.DerProgramType.Value(p)) for p in programs]
        self.policy = as_policy(policy)
        self.profile = profile if profile is not None else PowerProfile(seed=seed)
        #: The native interval of ``ListPowerProfile`` (time_unit INSTANT).
        self.step = step
        self.max_counter_offers = max_counter_offers
        self.require_registration = require_registration
        self.clock = clock
        #: Offers answered, by offer id.
        self.offers: dict[uuid.UUID, OfferRecord] = {}
        #: Every ``PriceDatum`` received through ``ProvidePrices``, in order.
        self.prices: list[esi.PriceDatum] = []
        #: Registrations with exchanges, by exchange uid.
        self.registrations: dict[str, ExchangeRegistration] = {}
        self._keys: Optional[KeyPair] = None

    @property
    def keys(self) -> KeyPair:
        """This facility's EC key pair (made on first use)."""
        if self._keys is None:
            self._keys = KeyPair.generate()
        return self._keys

    def _register(self, server: grpc.aio.Server) -> None:
        facility_grpc.add_DerFacilityServiceServicer_to_server(self, server)

    # -- checks ---------------------------------------------------------------

    def _route(self, route: Any, field: str = "route") -> Any:
        _wire.check_route(route, facility_uid=self.uid, field=field)
        if self.require_registration:
            _wire.require_registered(self.registrations, route.exchange_uid, f"{field}.exchange_uid", "facility")
        return route

    def _offer(self, msg: Any, field: str = "offer_id") -> OfferRecord:
        oid = _wire.uuid_of(msg.offer_id, field) if msg.HasField("offer_id") else None
        if oid is None:
            raise InvalidArgument(f"{field}: missing")
        record = self.offers.get(oid)
        if record is None:
            raise InvalidArgument(f"{field}: unknown offer {oid}")
        return record

    def _check_power_parameters(self, p: Any) -> None:
        checks = (
            ("voltage_range", self.limits.voltage, "V"),
            ("power_factor_range", self.limits.power_factor, ""),
            ("frequency_range", self.limits.frequency, "Hz"),
        )
        for name, (lo, hi), unit in checks:
            if not p.HasField(name):
                continue
            rng = getattr(p, name)
            for end in ("min", "max"):
                v = getattr(rng, end)
                if not (lo <= v <= hi or _close(v, lo) or _close(v, hi)):
                    raise InvalidArgument(f"{name}.{end}: {v:g} is outside the limits {lo:g}..{hi:g}{' ' + unit if unit else ''}")
            if rng.min > rng.max:
                raise InvalidArgument(f"{name}: min ({rng.min:g}) is above max ({rng.max:g})")

    # -- DerFacilityService ---------------------------------------------------

    @rpc
    async def CompleteDerFacilityRegistration(self, request: Any, context: Any) -> esi.Empty:
        route = _wire.check_route(_wire.route_of(request), facility_uid=self.uid)
        reg = self.registrations.get(route.exchange_uid)
        if reg is None or reg.status != "pending":
            raise InvalidArgument(f"route.exchange_uid: no registration with exchange {route.exchange_uid!r} is pending")
        # The exchange may call back before the receipt (and its nonce) got here.
        try:
            await asyncio.wait_for(reg._receipt.wait(), 10)
        except asyncio.TimeoutError:
            raise InvalidArgument(f"route.exchange_uid: the registration receipt of {route.exchange_uid!r} never came") from None
        if request.registration_token != reg.token(self.uid):
            raise InvalidArgument(
                "registration_token: does not match SHA-256(exchange_nonce, facility_nonce, exchange_uid, facility_uid, facility_endpoint_uri)"
            )
        reg.status = "registered" if request.success else "declined"
        reg._done.set()
        log.info("registration with exchange %s: %s", reg.exchange_uid, reg.status)
        return esi.Empty()

    @rpc
    async def ProposePriceMapOffer(self, request_iterator: Any, context: Any) -> Any:
        counters = 0
        async for offer in request_iterator:
            record = self._receive_offer(offer)
            response = esi.PriceMapOfferResponse(offer_id=offer.offer_id)
            if record.decision.action == "counter":
                if counters < self.max_counter_offers:
                    counters += 1
                    assert record.decision.counter is not None  # Decision checks it
                    response.counter_offer.CopyFrom(record.decision.counter)
                    yield response
                    continue
                record.decision = Decision.reject(f"no agreement after {counters} counter-offers")
            response.accept = record.decision.action == "accept"
            yield response
            return  # a final answer ends the facility's side (§2.5)

    def _receive_offer(self, offer: Any) -> OfferRecord:
        self._route(_wire.route_of(offer))
        if not offer.HasField("offer_id"):
            raise InvalidArgument("offer_id: missing")
        oid = _wire.uuid_of(offer.offer_id, "offer_id")
        if oid in self.offers:
            raise InvalidArgument(f"offer_id: {oid} was already used (a counter-offer is answered with a new offer id)")
        if not offer.HasField("price_map"):
            raise InvalidArgument("price_map: missing")
        _wire.check_price_map(offer.price_map, "price_map")
        decision = self.policy.decide(offer)
        if not isinstance(decision, Decision):
            raise TypeError(f"the offer policy returned {type(decision).__name__}, not a Decision")
        record = OfferRecord(offer_id=oid, offer=offer, decision=decision, received=self.clock())
        self.offers[oid] = record
        price = offer.price_map.price.apparent_energy_price
        log.info("offer %s from %s at %s %s: %s (%s)", oid, offer.route.exchange_uid, money.to_decimal(price), price.currency_code, decision.action, decision.reason)
        return record

    @rpc
    async def GetPriceMapOfferStatus(self, request: Any, context: Any) -> esi.PriceMapOfferStatus:
        route = self._route(_wire.route_of(request))
        record = self._offer(request)
        return esi.PriceMapOfferStatus(
            route=esi.DerRoute(exchange_uid=route.exchange_uid, facility_uid=self.uid),
            offer_id=request.offer_id,
            status=STATUS.Value(record.status(self.clock())),
        )

    @rpc
    async def ProvidePriceMapOfferFeedback(self, request: Any, context: Any) -> esi.PriceMapOfferFeedbackResponse:
        self._route(_wire.route_of(request))
        _wire.check_enum(OBLIGATION, request.obligation_status, "obligation_status")
        record = self._offer(request)
        accepted = record.decision.action == "accept"
        if accepted:
            record.feedback = OBLIGATION.Name(request.obligation_status)
        return esi.PriceMapOfferFeedbackResponse(offer_id=request.offer_id, accepted=accepted)

    @rpc
    async def ProvidePrices(self, request_iterator: Any, context: Any) -> esi.Empty:
        received: list[esi.PriceDatum] = []
        async for datum in request_iterator:
            where = f"PriceDatum #{len(received) + 1}"
            self._route(_wire.route_of(datum, f"{where}: route"), f"{where}: route")
            if not datum.HasField("ts"):
                raise InvalidArgument(f"{where}: ts: missing")
            _wire.check_enum(esi.TimeUnit, datum.time_unit, f"{where}: time_unit")
            if not datum.price_components.HasField("apparent_energy_price"):
                raise InvalidArgument(f"{where}: price_components.apparent_energy_price: missing")
            money.check(datum.price_components.apparent_energy_price, f"{where}: price_components.apparent_energy_price")
            received.append(datum)
        self.prices.extend(received)  # a refused stream keeps nothing
        return esi.Empty()

    @rpc
    async def ListPowerProfile(self, request: Any, context: Any) -> Any:
        self._route(_wire.route_of(request))
        starts, step = _wire.datum_intervals(request, self.clock(), self.step)
        for start in starts:
            real, reactive = self.profile.mean(start, step.seconds)
            yield esi.PowerProfileDatum(
                ts=_wire.timestamp(start),
                time_length=step.length,
                time_unit=esi.TimeUnit.ValueType(step.unit),
                power_components=esi.PowerComponents(real_power=real, reactive_power=reactive),
            )

    @rpc
    async def GetPowerParameters(self, request: Any, context: Any) -> esi.PowerParameters:
        self._route(request)
        return self.power_parameters

    @rpc
    async def SetPowerParameters(self, request: Any, context: Any) -> esi.PowerParameters:
        # The request has no route (esi-protocol.md §11): any caller may set them.
        self._check_power_parameters(request)
        merged = esi.PowerParameters()
        merged.CopyFrom(self.power_parameters)
        for name in ("voltage_range", "power_factor_range", "frequency_range"):
            if request.HasField(name):
                getattr(merged, name).CopyFrom(getattr(request, name))
        self.power_parameters = merged
        log.info("power parameters set: %s", str(merged).replace("\n", " "))
        return merged

    @rpc
    async def GetPriceParameters(self, request: Any, context: Any) -> esi.PriceParameters:
        self._route(request)
        return self.price_parameters

    # -- client side ------------------------------------------------------------

    async def lookup(self, registry: _calls.Target) -> list[esi.DerFacilityExchangeInfo]:
        """The exchanges a registry lists (``ListDerFacilityExchanges``)."""
        async with _calls.typed(esi.RegistryClient, registry) as client:
            return [info async for info in client.list_der_facility_exchanges(esi.DerFacilityExchangeRequest(), timeout=10)]

    async def register(
        self,
        exchange: _calls.Target,
        *,
        endpoint_uri: Optional[str] = None,
        answers: Optional[Mapping[str, str]] = None,
        nonce: Optional[bytes] = None,
    ) -> ExchangeRegistration:
        """Registers with an exchange: fetches its key and form, submits the
        form (``answers`` over :data:`FORM_ANSWERS`) with this facility's
        ``endpoint_uri`` (default: its own address), ``nonce`` (default 24
        random bytes) and public key. Returns the registration, ``pending``
        until the exchange calls ``CompleteDerFacilityRegistration``
        (:meth:`wait_registered`). A refused form raises the call's error."""
        async with _calls.typed(esi.ExchangeClient, exchange) as client:
            key = await client.get_public_crypto_key(timeout=10)
            form = await client.get_der_facility_registration_form(esi.DerFacilityRegistrationFormRequest(language_code="en-US"), timeout=10)
            given = {**FORM_ANSWERS, **(answers or {})}
            fields = {s.key for s in form.form.settings if s.type != esi.FormSetting.FormSettingType.Value("INFO")}
            uri = endpoint_uri or self.address
            reg = ExchangeRegistration(
                exchange_uid=form.exchange_uid,
                exchange_endpoint=getattr(exchange, "endpoint_uri", exchange if isinstance(exchange, str) else ""),
                exchange_key=bytes(key.key),
                facility_nonce=nonce if nonce is not None else os.urandom(24),
                exchange_nonce=b"",
                endpoint_uri=uri,
            )
            self.registrations[reg.exchange_uid] = reg
            request = esi.DerFacilityRegistrationFormData(
                route=esi.DerRoute(exchange_uid=reg.exchange_uid, facility_uid=self.uid),
                facility_endpoint_uri=uri,
                facility_nonce=reg.facility_nonce,
                facility_public_key=esi.CryptoKey(algorithm=ALGORITHM, encoding=ENCODING, key=self.keys.public_der),
                data=esi.FormData(key=form.form.key, data={k: v for k, v in given.items() if k in fields}),
            )
            try:
                receipt = await client.submit_der_facility_registration_form(request, timeout=10)
            except BaseException:
                reg.status = "refused"
                raise
            reg.exchange_nonce = bytes(receipt.exchange_nonce)
            reg._receipt.set()
            return reg

    async def wait_registered(self, exchange_uid: str, timeout: float = 10) -> ExchangeRegistration:
        """Waits until the exchange completed the registration (``registered``
        or ``declined``); raises :class:`TimeoutError` otherwise."""
        reg = self.registrations[exchange_uid]
        try:
            await asyncio.wait_for(reg._done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"exchange {exchange_uid!r} did not complete the registration within {timeout}s (status {reg.status})") from None
        return reg

    def _exchange_uid(self, exchange: _calls.Target, given: Optional[str]) -> str:
        uid = given or getattr(exchange, "uid", None)
        if uid:
            return str(uid)
        if len(self.registrations) == 1:
            return next(iter(self.registrations))
        raise ValueError("give exchange_uid (the target is not a resi.sim.Exchange and this facility has not exactly one registration)")

    def _route_to(self, exchange: _calls.Target, exchange_uid: Optional[str]) -> esi.DerRoute:
        return esi.DerRoute(exchange_uid=self._exchange_uid(exchange, exchange_uid), facility_uid=self.uid)

    async def provide_characteristics(self, exchange: _calls.Target, *, exchange_uid: Optional[str] = None) -> None:
        """Sends :attr:`characteristics` (``ProvideDerCharacteristics``)."""
        c = esi.DerCharacteristics()
        c.CopyFrom(self.characteristics)
        c.route.CopyFrom(self._route_to(exchange, exchange_uid))
        async with _calls.typed(esi.ExchangeClient, exchange) as client:
            await client.provide_der_characteristics([c], timeout=10)

    async def provide_price_maps(self, exchange: _calls.Target, *, exchange_uid: Optional[str] = None) -> None:
        """Sends :attr:`price_maps` (``ProvidePriceMaps``)."""
        msg = esi.PriceMapCharacteristics(route=self._route_to(exchange, exchange_uid), price_map=self.price_maps)
        async with _calls.typed(esi.ExchangeClient, exchange) as client:
            await client.provide_price_maps([msg], timeout=10)

    async def provide_programs(self, exchange: _calls.Target, *, exchange_uid: Optional[str] = None) -> None:
        """Sends :attr:`programs` (``ProvideSupportedDerPrograms``)."""
        msg = esi.DerProgramSet(route=self._route_to(exchange, exchange_uid), type=[esi.DerProgramType.Value(p) for p in self.programs])
        async with _calls.typed(esi.ExchangeClient, exchange) as client:
            await client.provide_supported_der_programs([msg], timeout=10)

    async def report_offer_status(self, exchange: _calls.Target, offer_id: uuid.UUID, *, exchange_uid: Optional[str] = None) -> bool:
        """Reports an answered offer's status now (``ProvidePriceMapOfferStatus``);
        returns whether the exchange accepted the report."""
        msg = esi.PriceMapOfferStatus(
            route=self._route_to(exchange, exchange_uid), offer_id=_wire.uuid_msg(offer_id), status=STATUS.Value(self.offer_status(offer_id))
        )
        async with _calls.typed(esi.ExchangeClient, exchange) as client:
            reply = await client.provide_price_map_offer_status(msg, timeout=10)
        return reply.accepted

    async def list_prices(
        self, exchange: _calls.Target, start: Optional[float] = None, end: Optional[float] = None, *, exchange_uid: Optional[str] = None
    ) -> list[esi.PriceDatum]:
        """The exchange's prices for ``[start, end)`` (epoch seconds), or the
        most recent one when no range is given (``ListPrices``)."""
        request = esi.DatumRequest(route=self._route_to(exchange, exchange_uid))
        if start is None or end is None:
            request.time_concept = esi.TimeConcept.Value("MOST_RECENT")
        else:
            request.time_range.min.CopyFrom(_wire.timestamp(start))
            request.time_range.max.CopyFrom(_wire.timestamp(end))
        async with _calls.typed(esi.ExchangeClient, exchange) as client:
            return [datum async for datum in client.list_prices(request, timeout=30)]

    # -- inspection -------------------------------------------------------------

    def offer_rows(self) -> list[dict[str, Any]]:
        """One row per answered offer, for a table (e.g. a DataFrame):
        ``offer_id``, ``exchange_uid``, ``price``, ``currency``,
        ``real_power``, ``duration`` (s), ``decision``, ``reason``,
        ``status`` (now) and ``feedback``."""
        now = self.clock()
        rows = []
        for r in self.offers.values():
            pm = r.offer.price_map
            rows.append(
                {
                    "offer_id": str(r.offer_id),
                    "exchange_uid": r.offer.route.exchange_uid,
                    "price": money.to_decimal(pm.price.apparent_energy_price),
                    "currency": pm.price.apparent_energy_price.currency_code,
                    "real_power": pm.power_components.real_power,
                    "duration": pm.duration.ToNanoseconds() / 1e9,
                    "decision": r.decision.action,
                    "reason": r.decision.reason,
                    "status": r.status(now),
                    "feedback": r.feedback,
                }
            )
        return rows

    def offer_status(self, offer_id: uuid.UUID) -> str:
        """The status name of an answered offer now (see :meth:`OfferRecord.status`)."""
        return self.offers[offer_id].status(self.clock())



__all__ = [
    "FORM_ANSWERS",
    "ExchangeRegistration",
    "Facility",
    "OfferRecord",
    "PowerLimits",
    "default_characteristics",
    "default_power_parameters",
    "price_map",
    "registration_token",
]

