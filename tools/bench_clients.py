"""resi's asyncio client against grpc.aio, plain to the same gRPC server.

Part of the benchmark command (``tools/bench.py``; see
docs/performance.md), also runnable alone against any server of the
``resitest.Echo`` service (tests/proto/echo.proto), e.g. the tonic node
that ``cargo bench --bench e2e -- --serve`` starts::

    python tools/bench_clients.py --target 127.0.0.1:PORT --rounds 5 --secs 2

Workload: unary calls of a 64-byte ``Msg`` (``Echo/Unary`` answers the
request), at concurrency 1 (latency p50/p99 and calls/s) and 64 (calls/s).
Clients: ``resi.Client.unary`` (bytes), ``resi.aio.Channel`` (the
grpc.aio-compatible channel, bytes in and out) and ``grpc.aio`` (bytes in
and out, no (de)serializers). Every reply is checked against the request.
Rounds are interleaved (each round runs every client once, in a rotated
order); medians, min-max and the per-round ratios to grpc.aio are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from grpc import aio

import resi
import resi.aio

UNARY = "/resitest.Echo/Unary"
BODY = bytes(range(64))
# resitest.Msg { body = BODY }: field 1, length-delimited.
REQUEST = b"\x0a" + bytes([len(BODY)]) + BODY
CALL_TIMEOUT = 30.0

Call = Callable[[bytes], Awaitable[bytes]]


@dataclass
class Figures:
    """One client's figures of one round."""

    p50_us: float
    p99_us: float
    c1_per_s: float
    c64_per_s: float


@dataclass
class Results:
    rounds: dict[str, list[Figures]] = field(default_factory=dict)


class WrongReply(Exception):
    pass


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def sequential(call: Call, secs: float) -> tuple[float, float, float]:
    """p50 and p99 latency (µs) and calls/s of calls one at a time."""
    latencies: list[float] = []
    start = time.perf_counter()
    until = start + secs
    now = start
    while now < until:
        reply = await call(REQUEST)
        done = time.perf_counter()
        if reply != REQUEST:
            raise WrongReply(f"reply {reply[:16]!r}... differs from the request")
        latencies.append((done - now) * 1e6)
        now = done
    latencies.sort()
    return percentile(latencies, 0.5), percentile(latencies, 0.99), len(latencies) / (now - start)


async def concurrent(call: Call, secs: float, concurrency: int) -> float:
    """Calls/s with ``concurrency`` callers each making calls back to back."""
    until = time.perf_counter() + secs

    async def caller() -> int:
        n = 0
        while time.perf_counter() < until:
            if await call(REQUEST) != REQUEST:
                raise WrongReply("a reply differs from its request")
            n += 1
        return n

    start = time.perf_counter()
    counts = await asyncio.gather(*(caller() for _ in range(concurrency)))
    return sum(counts) / (time.perf_counter() - start)


async def measure(call: Call, secs: float) -> Figures:
    for _ in range(100):  # warm-up
        await call(REQUEST)
    p50, p99, c1 = await sequential(call, secs)
    c64 = await concurrent(call, secs, 64)
    return Figures(p50, p99, c1, c64)


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def ratio(results: Results, name: str, base: str, attr: str) -> str:
    pairs = [getattr(a, attr) / getattr(b, attr) for a, b in zip(results.rounds[name], results.rounds[base])]
    return f"{statistics.median(pairs):.2f}× ({min(pairs):.2f}–{max(pairs):.2f})"


def table(results: Results, base: str = "grpc.aio") -> str:
    """A markdown table: medians (min–max) per client, paired ratios to ``base``."""
    lines = [
        "| client | c1 p50 µs | c1 p99 µs | c1 calls/s | c64 calls/s | c1 calls/s vs grpc.aio | c64 calls/s vs grpc.aio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figs in results.rounds.items():
        cells = [summary([getattr(f, a) for f in figs]) for a in ("p50_us", "p99_us", "c1_per_s", "c64_per_s")]
        ratios = ["1.00×", "1.00×"] if name == base else [ratio(results, name, base, a) for a in ("c1_per_s", "c64_per_s")]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


async def run(target: str, rounds: int, secs: float, out: Callable[[str], None]) -> Results:
    client = await resi.Client.connect(target)
    channel = aio.insecure_channel(target)
    resi_channel = resi.aio.Channel(client)
    try:
        clients: dict[str, Call] = {
            "resi.Client": lambda req: client.unary(UNARY, req, timeout=CALL_TIMEOUT),
            "resi.aio.Channel": _channel_call(resi_channel),
            "grpc.aio": _channel_call(channel),
        }
        results = Results({name: [] for name in clients})
        names = list(clients)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                figs = await measure(clients[name], secs)
                results.rounds[name].append(figs)
                out(f"round {r + 1}/{rounds} {name:<17} c1 p50 {figs.p50_us:7.0f} µs p99 {figs.p99_us:7.0f} µs "
                    f"{figs.c1_per_s:8.0f}/s | c64 {figs.c64_per_s:8.0f}/s")
        return results
    finally:
        await resi_channel.close()
        await channel.close()
        await client.close()


def _channel_call(channel: aio.Channel) -> Call:
    stub = channel.unary_unary(UNARY)

    async def call(req: bytes) -> bytes:
        return await stub(req, timeout=CALL_TIMEOUT)  # type: ignore[no-any-return]

    return call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="host:port of a resitest.Echo server (loopback)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--secs", type=float, default=2.0, help="seconds per figure")
    args = ap.parse_args(argv)
    results = asyncio.run(run(args.target, args.rounds, args.secs, lambda s: print(s, file=sys.stderr)))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
