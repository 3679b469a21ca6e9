"""Time series for the simulator: which intervals a ``DatumRequest`` asks
for, and the deterministic power profile and price schedule that fill them.

Everything here is plain Python on seconds since the epoch, so it is tested
without gRPC. Values depend only on ``(seed, time)``: the same request gives
the same answer, whatever was asked before.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from decimal import Decimal

from .errors import InvalidArgument

#: Seconds per ``solarnetwork.esi.domain.TimeUnit`` value that has a fixed
#: length (SECOND=1 ... WEEK=5). INSTANT (0) means "the node's own step";
#: MONTH (6) and YEAR (7) have no fixed length and are refused.
UNIT_SECONDS = {1: 1, 2: 60, 3: 3600, 4: 86400, 5: 604800}
UNIT_NAMES = {0: "INSTANT", 1: "SECOND", 2: "MINUTE", 3: "HOUR", 4: "DAY", 5: "WEEK", 6: "MONTH", 7: "YEAR"}

#: A request may ask for at most this many intervals.
MAX_INTERVALS = 10_000
#: The longest interval served (ten years of 365 days), in seconds.
MAX_STEP = 10 * 365 * 86400
#: The range of google.protobuf.Timestamp (0001-01-01 to 9999-12-31), in seconds.
TIMESTAMP_RANGE = (-62_135_596_800, 253_402_300_799)


@dataclass(frozen=True)
class Step:
    """An interval length as it goes on the wire (``time_length`` of
    ``time_unit``) and in seconds."""

    length: int
    unit: int

    @property
    def seconds(self) -> int:
        return self.length * UNIT_SECONDS[self.unit]


def step_for(time_unit: int, coalescence: int, default: Step) -> Step:
    """The interval a request asks for: ``coalescence`` (0 or 1: one) units
    of ``time_unit``; INSTANT means ``default``."""
    if time_unit == 0:
        return default
    if time_unit not in UNIT_SECONDS:
        name = UNIT_NAMES.get(time_unit, str(time_unit))
        raise InvalidArgument(f"time_unit: {name} is not supported (use SECOND, MINUTE, HOUR, DAY or WEEK)")
    step = Step(max(coalescence, 1), time_unit)
    if step.seconds > MAX_STEP:
        raise InvalidArgument(f"time_unit_coalescence: {step.length} x {UNIT_NAMES[time_unit]} is longer than ten years")
    return step


def interval_starts(start: float, end: float, step: Step) -> list[int]:
    """Starts of the intervals in ``[start, end)``, aligned to multiples of
    the step since the epoch (so hourly data start on the hour)."""
    lo, hi = TIMESTAMP_RANGE
    for name, t in (("min", start), ("max", end)):
        if not lo <= t <= hi:
            raise InvalidArgument(f"time_range.{name}: {t:.0f} s is outside the Timestamp range (years 1 to 9999)")
    if end <= start:
        raise InvalidArgument(f"time_range: max ({_iso(end)}) must be after min ({_iso(start)})")
    s = step.seconds
    first = math.ceil(start / s) * s
    count = max(0, math.ceil((end - first) / s))
    if count > MAX_INTERVALS:
        raise InvalidArgument(f"time_range holds {count} intervals of {s} s; at most {MAX_INTERVALS} are served per request")
    return [first + i * s for i in range(count)]


def most_recent_start(now: float, step: Step) -> int:
    """Start of the last interval that ended at or before ``now``."""
    s = step.seconds
    return (math.floor(now / s) - 1) * s


def _iso(t: float) -> str:  # t is within the Timestamp range here
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()


def _noise(seed: int, key: str, slot: int) -> float:
    """A reproducible number in [-1, 1) for ``(seed, key, slot)``."""
    digest = hashlib.blake2b(struct.pack(">qq", seed, slot) + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**63 - 1.0


def _day_fraction(t: float) -> float:
    return (t % 86400) / 86400


@dataclass(frozen=True)
class PowerProfile:
    """A facility's net power over time, in W (positive: the site draws
    power; negative: it supplies it): a base load with morning and evening
    peaks, minus a midday solar bump, plus per-minute noise from ``seed``.
    """

    seed: int = 0
    base_load: float = 4000.0
    peak_load: float = 3000.0
    solar_peak: float = 6000.0
    noise: float = 300.0
    power_factor: float = 0.95

    def real_power(self, t: float) -> float:
        """Real power at time ``t`` (seconds since the epoch), W."""
        d = _day_fraction(t)
        peaks = math.exp(-(((d - 0.33) / 0.06) ** 2)) + math.exp(-(((d - 0.79) / 0.08) ** 2))
        solar = max(0.0, math.sin(math.pi * (d - 0.25) / 0.5)) if 0.25 <= d <= 0.75 else 0.0
        jitter = _noise(self.seed, "power", int(t // 60))
        return self.base_load + self.peak_load * peaks - self.solar_peak * solar + self.noise * jitter

    def mean(self, start: float, seconds: float) -> tuple[int, int]:
        """Mean ``(real W, reactive VAR)`` over ``[start, start + seconds)``
        (sampled at up to 16 points)."""
        n = max(1, min(16, int(seconds // 60) or 1))
        real = sum(self.real_power(start + (i + 0.5) * seconds / n) for i in range(n)) / n
        tan = math.tan(math.acos(self.power_factor))
        return round(real), round(real * tan)


@dataclass(frozen=True)
class PriceSchedule:
    """An exchange's energy price over time: ``base`` with a ``peak``
    surcharge in the evening (17:00-21:00 UTC) and up to ``spread`` of hourly
    noise from ``seed``; prices are in ``currency`` units, rounded to 1e-4.
    """

    seed: int = 0
    currency: str = "USD"
    base: Decimal = Decimal("0.12")
    peak: Decimal = Decimal("0.18")
    spread: Decimal = Decimal("0.02")

    def price(self, t: float) -> Decimal:
        """The price in force at time ``t`` (seconds since the epoch)."""
        hour = (t % 86400) // 3600
        p = self.base + (self.peak if 17 <= hour < 21 else 0)
        p += self.spread * Decimal(repr(_noise(self.seed, "price", int(t // 3600))))
        return p.quantize(Decimal("0.0001"))
