"""Conversions and checks between ESI messages (:mod:`resi.esi`) and plain
Python values, shared by the three roles."""

from __future__ import annotations

import uuid
from typing import Any, Optional

from .. import esi
from . import money
from .errors import InvalidArgument
from .series import Step, interval_starts, most_recent_start, step_for


def uuid_msg(u: uuid.UUID) -> esi.Uuid:
    """An ESI ``Uuid`` (hi/lo 64 bits) of ``u``."""
    return esi.Uuid(hi=u.int >> 64, lo=u.int & ((1 << 64) - 1))


def uuid_of(msg: Any, field: str) -> uuid.UUID:
    """The UUID in an ESI ``Uuid``; an all-zero one counts as missing."""
    value = (msg.hi << 64) | msg.lo
    if value == 0:
        raise InvalidArgument(f"{field}: missing")
    return uuid.UUID(int=value)


def timestamp(seconds: float) -> esi.Timestamp:
    ts = esi.Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def seconds_of(ts: Any) -> float:
    return float(ts.seconds + ts.nanos / 1e9)


def money_msg(value: money.Amount, currency: str) -> esi.Money:
    units, nanos = money.split(value)
    return esi.Money(currency_code=currency, units=units, nanos=nanos)


def route_of(message: Any, field: str = "route") -> Any:
    """``message.route``, refused when absent."""
    if not message.HasField("route"):
        raise InvalidArgument(f"{field}: missing")
    return message.route


def check_route(route: Any, *, exchange_uid: Optional[str] = None, facility_uid: Optional[str] = None, field: str = "route") -> Any:
    """Checks a ``DerRoute``: both ids present, and equal to the given ones
    where given. Returns the route."""
    for name, want in (("exchange_uid", exchange_uid), ("facility_uid", facility_uid)):
        got = getattr(route, name)
        if not got:
            raise InvalidArgument(f"{field}.{name}: missing")
        if want is not None and got != want:
            raise InvalidArgument(f"{field}.{name}: this node is {want!r}, got {got!r}")
    return route


def require_registered(registrations: dict[str, Any], uid: str, field: str, node: str) -> None:
    """Refuses ``uid`` unless ``registrations[uid]`` is ``registered``."""
    reg = registrations.get(uid)
    if reg is None or reg.status != "registered":
        raise InvalidArgument(f"{field}: {uid!r} is not registered with this {node}")


def datum_intervals(request: Any, now: float, default: Step) -> tuple[list[int], Step]:
    """The interval starts and length a ``DatumRequest`` asks for: a
    ``time_range`` (``[min, max)``) or ``time_concept`` MOST_RECENT (the last
    complete interval before ``now``)."""
    step = step_for(request.time_unit, request.time_unit_coalescence, default)
    style = request.WhichOneof("time_style_oneof")
    if style is None:
        raise InvalidArgument("DatumRequest: set time_range or time_concept")
    if style == "time_concept":
        if request.time_concept != esi.TimeConcept.Value("MOST_RECENT"):
            raise InvalidArgument(f"time_concept: unknown value {request.time_concept}")
        return [most_recent_start(now, step)], step
    rng = request.time_range
    for end in ("min", "max"):
        if not rng.HasField(end):
            raise InvalidArgument(f"time_range.{end}: missing")
    return interval_starts(seconds_of(rng.min), seconds_of(rng.max), step), step


def check_enum(enum: Any, value: int, field: str) -> None:
    """Refuses an enum number the schema does not define."""
    if value not in enum.values():
        raise InvalidArgument(f"{field}: unknown value {value} (known: {', '.join(enum.keys())})")


def check_price_map(pm: Any, field: str) -> None:
    """Checks a ``PriceMap``: duration not negative, response time range
    ordered, a valid price."""
    if pm.duration.seconds < 0 or pm.duration.nanos < 0:
        raise InvalidArgument(f"{field}.duration: must not be negative")
    rt = pm.response_time
    if seconds_of(rt.max) and seconds_of(rt.min) > seconds_of(rt.max):
        raise InvalidArgument(f"{field}.response_time: min is above max")
    if not pm.price.HasField("apparent_energy_price"):
        raise InvalidArgument(f"{field}.price.apparent_energy_price: missing")
    money.check(pm.price.apparent_energy_price, f"{field}.price.apparent_energy_price")
