"""``Money`` values as :class:`~decimal.Decimal`, and their checks.

The ESI ``Money`` message has google.type.Money's layout: ``currency_code``,
whole ``units`` and ``nanos`` (billionths, same sign as ``units``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Union

from .errors import InvalidArgument

Amount = Union[Decimal, str, int, float]
_NANO = Decimal(1_000_000_000)
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def amount(value: Amount) -> Decimal:
    """``value`` as a Decimal (floats through ``repr``, so 0.1 stays 0.1)."""
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))


def split(value: Amount) -> tuple[int, int]:
    """``(units, nanos)`` of an amount, truncated to whole nanos."""
    d = amount(value)
    units = int(d)
    nanos = int((d - units) * _NANO)
    return units, nanos


def to_decimal(money: Any) -> Decimal:
    """The amount of a ``Money`` message (ignores the currency)."""
    return Decimal(money.units) + Decimal(money.nanos) / _NANO


def check(money: Any, field: str) -> Decimal:
    """Checks a ``Money`` message and returns its amount; ``field`` names it
    in the error."""
    if not _CURRENCY.match(money.currency_code):
        raise InvalidArgument(f"{field}.currency_code: expected an ISO 4217 code such as \"USD\", got {money.currency_code!r}")
    if not -1_000_000_000 < money.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field}.nanos: must be between -999999999 and 999999999, got {money.nanos}")
    if (money.units > 0 and money.nanos < 0) or (money.units < 0 and money.nanos > 0):
        raise InvalidArgument(f"{field}: units ({money.units}) and nanos ({money.nanos}) have opposite signs")
    return to_decimal(money)
