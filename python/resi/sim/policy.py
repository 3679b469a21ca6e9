"""How a simulated facility answers price map offers.

A policy is any object with ``decide(offer) -> Decision`` (see
:class:`OfferPolicy`), so a test or notebook can plug in its own rule. The
default, :class:`PriceFloorPolicy`, looks only at the price: at or above
``accept_at`` it accepts, below ``reject_below`` it rejects, in between it
counter-offers the same price map at ``accept_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Literal, Optional, Protocol, Union

from . import money

Action = Literal["accept", "reject", "counter"]


@dataclass(frozen=True)
class Decision:
    """A facility's answer to one offer: ``accept``, ``reject``, or
    ``counter`` with the price map it proposes instead (``counter``)."""

    action: Action
    counter: Optional[Any] = None
    reason: str = ""

    @classmethod
    def accept(cls, reason: str = "") -> Decision:
        return cls("accept", reason=reason)

    @classmethod
    def reject(cls, reason: str = "") -> Decision:
        return cls("reject", reason=reason)

    @classmethod
    def counter_with(cls, price_map: Any, reason: str = "") -> Decision:
        return cls("counter", counter=price_map, reason=reason)

    def __post_init__(self) -> None:
        if self.action not in ("accept", "reject", "counter"):
            raise ValueError(f"Decision.action: expected accept, reject or counter, got {self.action!r}")
        if (self.action == "counter") != (self.counter is not None):
            raise ValueError("Decision: a counter decision needs a price map, the others take none")


class OfferPolicy(Protocol):
    """Decides about one ``PriceMapOffer`` (already validated)."""

    def decide(self, offer: Any) -> Decision: ...


PolicyLike = Union[OfferPolicy, Callable[[Any], Decision]]


def with_price(price_map: Any, price: Decimal, currency: str) -> Any:
    """A copy of ``price_map`` asking ``price`` in ``currency``."""
    out = type(price_map)()
    out.CopyFrom(price_map)
    units, nanos = money.split(price)
    m = out.price.apparent_energy_price
    m.currency_code, m.units, m.nanos = currency, units, nanos
    return out


@dataclass
class PriceFloorPolicy:
    """Accepts offers priced at or above ``accept_at``, rejects those below
    ``reject_below`` (or in another currency), and counter-offers the same
    price map at ``accept_at`` in between."""

    accept_at: Decimal = Decimal("0.25")
    reject_below: Decimal = Decimal("0.10")
    currency: str = "USD"

    def __post_init__(self) -> None:
        self.accept_at = money.amount(self.accept_at)
        self.reject_below = money.amount(self.reject_below)
        if self.reject_below > self.accept_at:
            raise ValueError(f"PriceFloorPolicy: reject_below ({self.reject_below}) is above accept_at ({self.accept_at})")

    def decide(self, offer: Any) -> Decision:
        price = offer.price_map.price.apparent_energy_price
        if price.currency_code != self.currency:
            return Decision.reject(f"price in {price.currency_code}, this facility trades in {self.currency}")
        p = money.to_decimal(price)
        if p >= self.accept_at:
            return Decision.accept(f"{p} >= {self.accept_at}")
        if p < self.reject_below:
            return Decision.reject(f"{p} < {self.reject_below}")
        return Decision.counter_with(with_price(offer.price_map, self.accept_at, self.currency), f"{p} < {self.accept_at}: asking {self.accept_at}")


def as_policy(policy: Optional[PolicyLike]) -> OfferPolicy:
    """``policy`` as an object with ``decide`` (a plain function is wrapped;
    ``None`` gives the default :class:`PriceFloorPolicy`)."""
    if policy is None:
        return PriceFloorPolicy()
    if hasattr(policy, "decide"):
        return policy
    if callable(policy):
        return _FunctionPolicy(policy)
    raise TypeError(f"policy: expected an object with decide(offer) or a function, got {type(policy).__name__}")


@dataclass
class _FunctionPolicy:
    fn: Callable[[Any], Decision]

    def decide(self, offer: Any) -> Decision:
        return self.fn(offer)
