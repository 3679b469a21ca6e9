"""The ESI workload of ``resi demo``: the simulated facility, exchange and
registry (:mod:`resi.sim`) and the calls made between them, each answer
checked against what the simulator must answer.

Why checks can be exact: the simulators are deterministic (power profile
and prices depend only on ``(seed, time)``, the offer policy only on the
price) and their state is in this process, so every answer is compared
with the simulator's state or recomputed here. Scenarios that overwrite a
piece of state (power parameters, characteristics, price maps, programs)
hold a lock so a concurrent caller cannot change it between the call and
the check.

Directions: ``to-facility`` calls are made by the exchange through the
client gateway; ``to-exchange`` calls by the facility through the end
gateway's reverse listener.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from . import Client, esi
from .sim import Exchange, Facility, Registry, Server, money, price_map, serve
from .sim.series import interval_starts

TO_FACILITY = "to-facility"
TO_EXCHANGE = "to-exchange"
#: Time ranges asked for start from here (2026-06-01T00:00:00Z) plus a
#: seeded offset: answers do not depend on the wall clock.
EPOCH = 1_780_272_000
#: Offer prices and the round outcome the facility's default policy gives
#: (accept at 0.25 or more, reject below 0.10, counter-offer 0.25 between).
OFFER_PRICES = {"0.30": "accepted", "0.25": "accepted", "0.18": "accepted", "0.12": "accepted", "0.05": "rejected"}
OBLIGATIONS = ("UNKNOWN", "SATISFIED", "DISPUTED")


class WrongAnswer(Exception):
    """An answer differed from what the simulator must answer."""


def expect(what: str, got: object, want: object) -> None:
    if got != want:
        g, w = str(got).replace("\n", " "), str(want).replace("\n", " ")
        raise WrongAnswer(f"{what}: expected {w[:120]}, got {g[:120]}")


Run = Callable[[random.Random, float], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """One kind of call: ``run(rng, timeout)`` makes one RPC (``rpc``, in
    ``direction``) and raises :class:`WrongAnswer` on an unexpected answer."""

    rpc: str
    direction: str
    weight: int
    run: Run


class EsiWorkload:
    """The three simulators and the demo's ESI calls between them."""

    directions = (TO_FACILITY, TO_EXCHANGE)

    def __init__(self, seed: int) -> None:
        self.facility = Facility(uid="facility-1", seed=seed)
        self.exchange = Exchange(uid="exchange-1", seed=seed)
        self.registry = Registry()
        self._servers: list[Server] = [serve([self.facility]), serve([self.exchange, self.registry])]
        self._clients: tuple[esi.FacilityClient, esi.ExchangeClient] | None = None
        self.offers: list[uuid.UUID] = []
        self._locks = {k: asyncio.Lock() for k in ("power", "characteristics", "price_maps", "programs")}

    async def start(self) -> tuple[str, str]:
        """Starts the servers; returns ``(facility address, exchange and
        registry address)``."""
        for s in self._servers:
            await s.start()
        return self.facility.address, self.exchange.address

    async def stop(self) -> None:
        await self.exchange.stop()
        for s in self._servers:
            await s.stop(0)

    @property
    def ex(self) -> esi.FacilityClient:
        """The exchange's client of the facility (its calls enter at the
        client gateway)."""
        if self._clients is None:
            raise RuntimeError("setup() has not run")
        return self._clients[0]

    @property
    def fac(self) -> esi.ExchangeClient:
        """The facility's client of the exchange and registry (its calls
        enter at the end gateway's reverse listener)."""
        if self._clients is None:
            raise RuntimeError("setup() has not run")
        return self._clients[1]

    def route(self) -> esi.DerRoute:
        return esi.DerRoute(exchange_uid=self.exchange.uid, facility_uid=self.facility.uid)

    def served(self) -> dict[tuple[str, str], int]:
        """Calls each simulator received, per ``(direction, RPC)``."""
        out = {(TO_FACILITY, k): v for k, v in self.facility.calls.items()}
        for role in (self.exchange, self.registry):
            out.update({(TO_EXCHANGE, k): v for k, v in role.calls.items()})
        return out

    async def setup(self, ex: Client, fac: Client, facility_endpoint: str, exchange_endpoint: str) -> list[tuple[str, str]]:
        """The registration and a first offer round, through the gateways:
        the registry lists the exchange at ``exchange_endpoint``; the
        facility fetches the exchange's key and form and submits it with
        ``facility_endpoint``, where the exchange calls back
        ``CompleteDerFacilityRegistration``. Returns the ``(direction,
        RPC)`` calls made."""
        self._clients = (esi.FacilityClient(ex), esi.ExchangeClient(fac))
        ex_ = self.exchange
        self.registry.exchanges.append((ex_.name, ex_.uid, exchange_endpoint))
        listed = await self.facility.lookup(fac)
        expect("ListDerFacilityExchanges", listed, self.registry.listing())
        await self.facility.register(fac, endpoint_uri=facility_endpoint)
        reg = await self.facility.wait_registered(ex_.uid, timeout=15)
        expect("registration (facility side)", reg.status, "registered")
        theirs = await ex_.wait_registration(self.facility.uid, timeout=15)
        expect("registration (exchange side)", (theirs.status, theirs.error), ("registered", None))
        await self.offer_round(random.Random(0), 15.0)
        return [
            (TO_EXCHANGE, "ListDerFacilityExchanges"),
            (TO_EXCHANGE, "GetPublicCryptoKey"),
            (TO_EXCHANGE, "GetDerFacilityRegistrationForm"),
            (TO_EXCHANGE, "SubmitDerFacilityRegistrationForm"),
            (TO_FACILITY, "CompleteDerFacilityRegistration"),
            (TO_FACILITY, "ProposePriceMapOffer"),
        ]

    def scenarios(self) -> list[Scenario]:
        f, x = TO_FACILITY, TO_EXCHANGE
        return [
            Scenario("GetPowerParameters", f, 3, self.get_power_parameters),
            Scenario("SetPowerParameters", f, 1, self.set_power_parameters),
            Scenario("ListPowerProfile", f, 2, self.list_power_profile),
            Scenario("ProposePriceMapOffer", f, 2, self.offer_round),
            Scenario("GetPriceMapOfferStatus", f, 2, self.get_offer_status),
            Scenario("ProvidePriceMapOfferFeedback", f, 1, self.offer_feedback),
            Scenario("ProvidePrices", f, 2, self.provide_prices),
            Scenario("ListDerFacilityExchanges", x, 1, self.list_exchanges),
            Scenario("GetPublicCryptoKey", x, 1, self.get_public_key),
            Scenario("GetDerFacilityRegistrationForm", x, 1, self.get_form),
            Scenario("ProvideDerCharacteristics", x, 1, self.provide_characteristics),
            Scenario("ProvidePriceMaps", x, 1, self.provide_price_maps),
            Scenario("ProvideSupportedDerPrograms", x, 1, self.provide_programs),
            Scenario("ProvidePriceMapOfferStatus", x, 2, self.report_offer_status),
            Scenario("ListPrices", x, 2, self.list_prices),
        ]

    # -- the exchange calls the facility ------------------------------------------

    async def get_power_parameters(self, rng: random.Random, timeout: float) -> None:
        async with self._locks["power"]:
            got = await self.ex.get_power_parameters(self.route(), timeout=timeout)
            expect("GetPowerParameters", got, self.facility.power_parameters)

    async def set_power_parameters(self, rng: random.Random, timeout: float) -> None:
        lo_v = rng.randint(200, 240)
        lo_f = rng.randint(55, 60)
        pf = rng.randint(52, 60) / 64  # exact in float32, within 0.8..1.0
        want = esi.PowerParameters(
            voltage_range=esi.SignedInt32Range(min=lo_v, max=rng.randint(lo_v, 280)),
            power_factor_range=esi.FloatRange(min=pf, max=rng.randint(int(pf * 64), 64) / 64),
            frequency_range=esi.SignedInt32Range(min=lo_f, max=rng.randint(lo_f, 65)),
        )
        async with self._locks["power"]:
            got = await self.ex.set_power_parameters(want, timeout=timeout)
            expect("SetPowerParameters", got, want)
            expect("SetPowerParameters (facility state)", self.facility.power_parameters, want)

    async def list_power_profile(self, rng: random.Random, timeout: float) -> None:
        start = EPOCH + rng.randrange(0, 30 * 86400, 900)
        end = start + rng.randint(1, 96) * 900
        req = esi.DatumRequest(route=self.route())
        req.time_range.min.FromSeconds(start)
        req.time_range.max.FromSeconds(end)
        got = [d async for d in self.ex.list_power_profile(req, timeout=timeout)]
        step = self.facility.step
        starts = interval_starts(start, end, step)
        expect("ListPowerProfile (intervals)", [d.ts.seconds for d in got], starts)
        for d in got:
            real, reactive = self.facility.profile.mean(d.ts.seconds, step.seconds)
            expect("ListPowerProfile (power)", (d.power_components.real_power, d.power_components.reactive_power), (real, reactive))

    async def offer_round(self, rng: random.Random, timeout: float) -> None:
        price = rng.choice(sorted(OFFER_PRICES))
        pm = price_map(real_power=rng.randint(1, 20) * 1000, duration=3600, price=price)
        rnd = await self.exchange.run_offer_round(self.ex, pm, facility_uid=self.facility.uid, timeout=timeout)
        expect(f"ProposePriceMapOffer at {price} (outcome)", rnd.outcome, OFFER_PRICES[price])
        countered = Decimal(price) < Decimal("0.25") and rnd.outcome == "accepted"
        expect(f"ProposePriceMapOffer at {price} (offers)", len(rnd.steps), 2 if countered else 1)
        for step in rnd.steps:
            record = self.facility.offers.get(step.offer_id)
            expect("ProposePriceMapOffer (facility's record)", record is not None and record.decision.action, step.answer)
        self.offers.append(rnd.offer_id)

    def _pick_offer(self, rng: random.Random) -> uuid.UUID:
        return rng.choice(self.offers)  # setup() made the first one

    async def get_offer_status(self, rng: random.Random, timeout: float) -> None:
        oid = self._pick_offer(rng)
        req = esi.PriceMapOfferStatusRequest(route=self.route(), offer_id=_uuid_msg(oid))
        got = await self.ex.get_price_map_offer_status(req, timeout=timeout)
        expect("GetPriceMapOfferStatus", esi.PriceMapOfferStatus.Status.Name(got.status), self.facility.offer_status(oid))

    async def offer_feedback(self, rng: random.Random, timeout: float) -> None:
        oid = self._pick_offer(rng)
        status = rng.choice(OBLIGATIONS)
        req = esi.PriceMapOfferFeedback(
            route=self.route(), offer_id=_uuid_msg(oid), obligation_status=esi.PriceMapOfferFeedback.ObligationStatus.Value(status)
        )
        got = await self.ex.provide_price_map_offer_feedback(req, timeout=timeout)
        accepted = self.facility.offers[oid].decision.action == "accept"
        expect("ProvidePriceMapOfferFeedback (accepted)", got.accepted, accepted)

    async def provide_prices(self, rng: random.Random, timeout: float) -> None:
        start = EPOCH + rng.randrange(0, 30 * 86400, 3600)
        end = start + rng.randint(1, 24) * 3600
        before = len(self.facility.prices)
        sent = await self.exchange.provide_prices(self.ex, start, end, facility_uid=self.facility.uid)
        kept = self.facility.prices[before:]
        expect("ProvidePrices (data the facility kept)", all(d in kept for d in sent), True)

    # -- the facility calls the exchange and the registry ------------------------

    async def list_exchanges(self, rng: random.Random, timeout: float) -> None:
        expect("ListDerFacilityExchanges", await self.facility.lookup(self.fac), self.registry.listing())

    async def get_public_key(self, rng: random.Random, timeout: float) -> None:
        got = await self.fac.get_public_crypto_key(timeout=timeout)
        expect("GetPublicCryptoKey", bytes(got.key), self.exchange.keys.public_der)

    async def get_form(self, rng: random.Random, timeout: float) -> None:
        req = esi.DerFacilityRegistrationFormRequest(exchange_uid=self.exchange.uid, language_code="en-US")
        got = await self.fac.get_der_facility_registration_form(req, timeout=timeout)
        expect("GetDerFacilityRegistrationForm", got, esi.DerFacilityRegistrationForm(exchange_uid=self.exchange.uid, form=self.exchange.form))

    async def provide_characteristics(self, rng: random.Random, timeout: float) -> None:
        c = self.facility.characteristics
        async with self._locks["characteristics"]:
            c.load_power_max = rng.randint(5, 50) * 1000
            c.supply_power_max = rng.randint(0, 20) * 1000
            c.storage_energy_capacity = rng.randint(0, 40) * 500
            await self.facility.provide_characteristics(self.fac)
            want = esi.DerCharacteristics()
            want.CopyFrom(c)
            want.route.CopyFrom(self.route())
            expect("ProvideDerCharacteristics (exchange state)", self.exchange.characteristics.get(self.facility.uid), want)

    async def provide_price_maps(self, rng: random.Random, timeout: float) -> None:
        maps = [price_map(real_power=rng.randint(1, 20) * 1000, price=rng.choice(sorted(OFFER_PRICES))) for _ in range(rng.randint(1, 3))]
        async with self._locks["price_maps"]:
            self.facility.price_maps = maps
            await self.facility.provide_price_maps(self.fac)
            expect("ProvidePriceMaps (exchange state)", self.exchange.price_maps.get(self.facility.uid), maps)

    async def provide_programs(self, rng: random.Random, timeout: float) -> None:
        names = rng.sample(sorted(esi.DerProgramType.keys()), rng.randint(1, 4))
        async with self._locks["programs"]:
            self.facility.programs = names
            await self.facility.provide_programs(self.fac)
            expect("ProvideSupportedDerPrograms (exchange state)", self.exchange.programs.get(self.facility.uid), names)

    async def report_offer_status(self, rng: random.Random, timeout: float) -> None:
        oid = self._pick_offer(rng)
        accepted = await self.facility.report_offer_status(self.fac, oid)
        expect("ProvidePriceMapOfferStatus (accepted)", accepted, True)
        expect("ProvidePriceMapOfferStatus (recorded)", self.facility.offer_status(oid) in self.exchange.offers[oid].statuses, True)

    async def list_prices(self, rng: random.Random, timeout: float) -> None:
        start = EPOCH + rng.randrange(0, 30 * 86400, 3600)
        end = start + rng.randint(1, 48) * 3600
        got = await self.facility.list_prices(self.fac, start, end)
        expect("ListPrices (intervals)", [d.ts.seconds for d in got], interval_starts(start, end, self.exchange.step))
        for d in got:
            price = money.to_decimal(d.price_components.apparent_energy_price)
            expect("ListPrices (price)", price, self.exchange.prices.price(d.ts.seconds))


def _uuid_msg(u: uuid.UUID) -> esi.Uuid:
    return esi.Uuid(hi=u.int >> 64, lo=u.int & ((1 << 64) - 1))
