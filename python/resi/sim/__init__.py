"""A reference ESI implementation of the three roles, for demos, notebooks
and tests (see docs/python.md, "Simulator")."""

from ._server import Role, Server, serve
from .errors import InvalidArgument
from .exchange import FORM_KEY, Exchange, ExchangeOffer, FacilityRegistration, OfferRound, OfferStep, registration_form
from .facility import (
    FORM_ANSWERS,
    ExchangeRegistration,
    Facility,
    OfferRecord,
    PowerLimits,
    default_characteristics,
    default_power_parameters,
    price_map,
    registration_token,
)
from .keys import KeyPair
from .policy import Decision, OfferPolicy, PriceFloorPolicy
from .registry import ExchangeEntry, Registry
from .series import PowerProfile, PriceSchedule, Step

__all__ = [
    "FORM_ANSWERS",
    "FORM_KEY",
    "Decision",
    "Exchange",
    "ExchangeEntry",
    "ExchangeOffer",
    "ExchangeRegistration",
    "Facility",
    "FacilityRegistration",
    "InvalidArgument",
    "KeyPair",
    "OfferPolicy",
    "OfferRecord",
    "OfferRound",
    "OfferStep",
    "PowerLimits",
    "PowerProfile",
    "PriceFloorPolicy",
    "PriceSchedule",
    "Registry",
    "Role",
    "Server",
    "Step",
    "default_characteristics",
    "default_power_parameters",
    "price_map",
    "registration_form",
    "registration_token",
    "serve",
]
