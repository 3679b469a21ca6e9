"""``resi demo``: the whole mission on one machine, in one command.

Everything runs in this process, on loopback, with no network: the embedded
local NKN node, a simulated facility behind an *end gateway*, a *client
gateway* joined to it by two TCP paths (each through a
:class:`resi.FaultRelay`, so it can be cut) and an NKN path through the
local node, a simulated exchange and registry behind the client gateway,
and ESI calls both ways through them (the workload is in
:mod:`resi._demo_esi`). Partway
through, paths are cut and later restored (by default: ``tcp0`` at 30 %,
``nkn`` at 55 %, both back at 75 %). Every answer is checked against what
the simulator must answer; a call that fails or times out is *lost*, one
with an unexpected answer is *wrong*. At the end a summary tells calls per
RPC, the redundancy counters of each path, the longest stall and whether
everything came back.

From Python (a notebook, a test)::

    import asyncio
    from resi.demo import DemoOptions, run_demo

    summary = asyncio.run(run_demo(DemoOptions(duration=10, mode="permissive")))
    print(summary.format())
    assert summary.passed

The command is ``resi demo`` (``resi demo --help``); it exits 0 only when
no call was lost or wrong and every path was live again at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from . import CallError, Client, FaultRelay, Gateway, PathStats, SessionStats, refresh_logging
from .nkn import Identity, LocalNode

try:  # the simulators need grpcio (a dependency of resi)
    from ._demo_esi import EsiWorkload, Scenario, WrongAnswer
except ImportError as _e:  # pragma: no cover - depends on the installation
    _IMPORT_ERROR: ImportError | None = _e
else:
    _IMPORT_ERROR = None

__all__ = [
    "Cut",
    "DemoError",
    "DemoOptions",
    "DemoSummary",
    "DEFAULT_CUTS",
    "DEFAULT_CUTS_TCP",
    "WrongAnswer",
    "main",
    "parse_cuts",
    "run_demo",
]

#: The default cut schedule: one TCP path, then NKN, both restored later.
DEFAULT_CUTS = "tcp0@30%-75%,nkn@55%-75%"
#: The default without NKN (cutting both TCP paths would leave none).
DEFAULT_CUTS_TCP = "tcp0@30%-75%"
#: Session timers of the demo's gateways: a silent path leaves the session
#: after ``DeadTimeout``, so that is roughly the longest stall to expect.
DEMO_TIMERS = {"HeartbeatInterval": "100ms", "DeadTimeout": "600ms", "RedialMaxBackoff": "500ms"}
# Untimed cuts (`--cut tcp0,nkn`) start spread over 30 %..55 % and end at 75 %.
_FIRST_CUT, _LAST_CUT, _RESTORE = 0.30, 0.55, 0.75


class DemoError(Exception):
    """The demo could not be set up (a bad option, a part that did not start)."""


@dataclass(frozen=True)
class Cut:
    """Path ``path`` (``"tcp0"``, ``"tcp1"`` or ``"nkn"``) is cut at
    ``start`` and restored at ``end`` (fractions of the run, 0..1; ``end``
    None: never restored)."""

    path: str
    start: float
    end: float | None


def _when(text: str, duration: float, spec: str) -> float:
    """A point of the run as a fraction: ``"30%"``, ``"9s"`` or ``"9"`` (seconds)."""
    t = text.strip()
    try:
        if t.endswith("%"):
            frac = float(t[:-1]) / 100.0
        else:
            frac = float(t[:-1] if t.endswith("s") else t) / duration
    except ValueError:
        raise DemoError(f"--cut {spec!r}: {text!r} is not a time (e.g. 30%, 9s)") from None
    if not 0.0 <= frac <= 1.0:
        raise DemoError(f"--cut {spec!r}: {text!r} is outside the run (0%..100%, 0..{duration:g}s)")
    return frac


def parse_cuts(spec: str, paths: Sequence[str], duration: float) -> list[Cut]:
    """Parses a cut schedule: ``"none"``, or comma-separated
    ``PATH[@START[-END]]`` items where times are ``30%`` (of the run) or
    ``9s``; ``END`` may be ``never``. Untimed items are spread between 30 %
    and 55 % and restored at 75 %. ``paths`` are the valid path names."""
    if spec.strip().lower() in ("", "none"):
        return []
    items = [s.strip() for s in spec.split(",") if s.strip()]
    untimed = [i for i, s in enumerate(items) if "@" not in s]
    cuts = []
    for i, item in enumerate(items):
        name, _, times = item.partition("@")
        name = name.strip().lower()
        if name not in paths:
            raise DemoError(f"--cut {spec!r}: unknown path {name!r} (paths: {', '.join(paths)})")
        if not times:
            k = untimed.index(i)
            start = _FIRST_CUT + (_LAST_CUT - _FIRST_CUT) * (k / (len(untimed) - 1) if len(untimed) > 1 else 0.0)
            cuts.append(Cut(name, start, _RESTORE))
            continue
        first, dash, last = times.partition("-")
        start = _when(first, duration, spec)
        if not dash:
            if start >= _RESTORE:
                raise DemoError(f"--cut {spec!r}: {name} is cut after 75% with no END (e.g. @80%-95% or @80%-never)")
            end: float | None = _RESTORE
        elif last.strip().lower() == "never":
            end = None
        else:
            end = _when(last, duration, spec)
            if end <= start:
                raise DemoError(f"--cut {spec!r}: {name} is restored ({last}) before it is cut ({first})")
        cuts.append(Cut(name, start, end))
    seen = [c.path for c in cuts]
    if len(set(seen)) != len(seen):
        raise DemoError(f"--cut {spec!r}: a path is named twice")
    return cuts


@dataclass
class DemoOptions:
    """What :func:`run_demo` does. ``cuts`` is a schedule string (see
    :func:`parse_cuts`), a list of :class:`Cut`, or None for the default
    (:data:`DEFAULT_CUTS`, or :data:`DEFAULT_CUTS_TCP` without NKN)."""

    mode: str = "strict"
    duration: float = 30.0
    cuts: str | list[Cut] | None = None
    nkn: bool = True
    #: Concurrent callers per direction.
    concurrency: int = 4
    seed: int = 1
    #: A call not answered within this many seconds is lost.
    call_timeout: float = 10.0
    #: How a TCP path is cut: ``"silence"`` (the link drops everything; the
    #: session notices by missing heartbeats) or ``"reset"`` (connections
    #: reset, redials refused).
    tcp_fault: str = "silence"
    #: ``[Resi] ResumeTimeout`` of both gateways (how long a session
    #: survives with no live path).
    resume_timeout: float = 30.0
    #: A gap between successful completions longer than this is a stall.
    stall_threshold: float = 0.5
    #: Where the progress line and events go (None: nowhere).
    progress: TextIO | None = None


@dataclass
class RpcStats:
    rpc: str
    direction: str
    ok: int = 0
    failed: int = 0
    wrong: int = 0
    #: Calls the simulator received (each call must arrive exactly once).
    served: int = 0
    #: The first failure or wrong answer, for the report.
    first_error: str | None = None


@dataclass
class PathRow:
    name: str
    transport: str
    state: str
    bytes_sent: int
    bytes_received: int
    first_bytes: int
    duplicate_bytes: int
    missed_bytes: int
    retransmitted_bytes: int
    rtt_ms: float | None
    admissions: int


@dataclass
class DemoSummary:
    """What a run did; :attr:`passed` is the verdict."""

    mode: str
    duration: float
    #: Seconds the workload ran (``duration`` plus the last calls' answers).
    elapsed: float
    #: Seconds before it: parts started, paths up, the registration.
    setup_seconds: float
    paths: list[str]
    rpcs: list[RpcStats]
    #: The client gateway's view of each path (its session to the end gateway).
    path_stats: list[PathRow]
    #: Duplicate stream bytes removed: ``{"client": n, "end": n}``.
    duplicates_removed: dict[str, int]
    #: Longest gap between successful completions per direction, seconds.
    longest_stall: dict[str, float]
    #: Gaps longer than ``stall_threshold`` per direction.
    stalls: dict[str, int]
    stall_threshold: float
    #: What happened, in order: ``(seconds into the workload, text)``;
    #: None for the setup before it.
    events: list[tuple[float | None, str]]
    #: Paths cut, restored, and down at the end.
    cuts: list[Cut]
    paths_down_at_end: list[str]
    session_failures: int
    mismatches: int
    errors: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(r.ok + r.failed + r.wrong for r in self.rpcs)

    @property
    def lost(self) -> int:
        return sum(r.failed for r in self.rpcs)

    @property
    def wrong(self) -> int:
        return sum(r.wrong for r in self.rpcs)

    @property
    def passed(self) -> bool:
        """No call lost or wrong, calls made, and every path live at the end."""
        return self.calls > 0 and not self.lost and not self.wrong and not self.paths_down_at_end and not self.errors

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain data (what ``--json`` prints)."""
        d = asdict(self)
        d.update(calls=self.calls, lost=self.lost, wrong=self.wrong, passed=self.passed)
        d["events"] = [{"t": None if t is None else round(t, 3), "event": e} for t, e in self.events]
        d["directions"] = sorted({r.direction for r in self.rpcs})
        return d

    def format(self) -> str:
        """The summary as text tables."""
        out = [f"resi demo: {self.mode} mode, {self.elapsed:.1f} s, paths {', '.join(self.paths)}", ""]
        w = max([len("RPC")] + [len(r.rpc) for r in self.rpcs])
        out.append(f"{'RPC':<{w}}  {'direction':<12} {'ok':>7} {'failed':>7} {'wrong':>7} {'served':>7}")
        for r in self.rpcs:
            out.append(f"{r.rpc:<{w}}  {r.direction:<12} {r.ok:>7} {r.failed:>7} {r.wrong:>7} {r.served:>7}")
        ok = sum(r.ok for r in self.rpcs)
        served = sum(r.served for r in self.rpcs)
        out.append(f"{'total':<{w}}  {'':<12} {ok:>7} {self.lost:>7} {self.wrong:>7} {served:>7}")
        out.append("")
        out.append(
            f"{'path':<5} {'transport':<9} {'state':<5} {'sent':>9} {'received':>9} "
            f"{'first':>9} {'duplicate':>9} {'missed':>9} {'resent':>9} {'rtt':>8} {'joins':>5}"
        )
        for p in self.path_stats:
            rtt = "-" if p.rtt_ms is None else f"{p.rtt_ms:.1f}ms"
            out.append(
                f"{p.name:<5} {p.transport:<9} {p.state:<5} {_size(p.bytes_sent):>9} {_size(p.bytes_received):>9} "
                f"{_size(p.first_bytes):>9} {_size(p.duplicate_bytes):>9} {_size(p.missed_bytes):>9} "
                f"{_size(p.retransmitted_bytes):>9} {rtt:>8} {p.admissions:>5}"
            )
        out.append("")
        dup = self.duplicates_removed
        out.append(
            f"duplicates removed: {_size(dup.get('client', 0))} at the client gateway, "
            f"{_size(dup.get('end', 0))} at the end gateway"
        )
        stalls = ", ".join(
            f"{d} {self.longest_stall[d]:.2f} s ({self.stalls.get(d, 0)} over {self.stall_threshold:g} s)"
            for d in sorted(self.longest_stall)
        )
        out.append(f"longest stall: {stalls or '-'}")
        cuts = ", ".join(
            f"{c.path} {c.start:.0%}-{'never' if c.end is None else format(c.end, '.0%')}" for c in self.cuts
        )
        out.append(f"cuts: {cuts or 'none'}")
        if self.session_failures or self.mismatches:
            out.append(f"session failures: {self.session_failures}, mismatches: {self.mismatches}")
        for e in self.errors:
            out.append(f"error: {e}")
        for r in self.rpcs:
            if r.first_error:
                out.append(f"first problem of {r.rpc}: {r.first_error}")
        if self.paths_down_at_end:
            out.append(f"down at the end: {', '.join(self.paths_down_at_end)}")
        verdict = "PASS" if self.passed else "FAIL"
        out.append(
            f"result: {verdict} ({self.calls} calls, {self.lost} lost, {self.wrong} wrong, "
            f"{'all paths live at the end' if not self.paths_down_at_end else 'not every path came back'})"
        )
        return "\n".join(out)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# --- the workload ------------------------------------------------------------


class Recorder:
    """Counts outcomes per RPC and tracks gaps between completions."""

    def __init__(self, scenarios: Sequence[Scenario], threshold: float) -> None:
        self.rpcs = {(s.direction, s.rpc): RpcStats(s.rpc, s.direction) for s in scenarios}
        self.threshold = threshold
        self.t0 = time.monotonic()
        self.w0: float | None = None
        self.last: dict[str, float] = {}
        self.longest: dict[str, float] = {}
        self.stalls: dict[str, int] = {}

    def start(self, directions: Sequence[str]) -> None:
        """The workload starts now: gaps and :meth:`elapsed` count from here."""
        self.w0 = time.monotonic()
        for d in directions:
            self.last[d] = self.w0
            self.longest[d] = 0.0
            self.stalls[d] = 0

    def now(self) -> float:
        """Seconds since the demo started (event times)."""
        return time.monotonic() - self.t0

    def elapsed(self) -> float:
        """Seconds since the workload started (0 before)."""
        return time.monotonic() - self.w0 if self.w0 is not None else 0.0

    def _gap(self, direction: str, now: float) -> None:
        gap = now - self.last[direction]
        if gap > self.longest[direction]:
            self.longest[direction] = gap
        if gap > self.threshold:
            self.stalls[direction] += 1

    def done(self, s: Scenario, error: str | None, wrong: bool) -> None:
        self.count(s.direction, s.rpc, error, wrong)

    def count(self, direction: str, rpc: str, error: str | None = None, wrong: bool = False) -> None:
        r = self.rpcs.setdefault((direction, rpc), RpcStats(rpc, direction))
        if error is None:
            r.ok += 1
            now = time.monotonic()
            if direction in self.last:
                self._gap(direction, now)
                self.last[direction] = now
            return
        if wrong:
            r.wrong += 1
        else:
            r.failed += 1
        if r.first_error is None:
            r.first_error = f"at {self.elapsed():.1f} s: {error}"

    def finish(self) -> None:
        now = time.monotonic()
        for d in self.last:
            self._gap(d, now)

    def stalled_now(self) -> dict[str, float]:
        now = time.monotonic()
        return {d: now - t for d, t in self.last.items() if now - t > self.threshold}

    def totals(self) -> tuple[int, int, int]:
        rs = self.rpcs.values()
        return sum(r.ok for r in rs), sum(r.failed for r in rs), sum(r.wrong for r in rs)


async def _call(s: Scenario, rng: random.Random, timeout: float, rec: Recorder) -> None:
    try:
        await asyncio.wait_for(s.run(rng, timeout), timeout + 1.0)
    except WrongAnswer as e:
        rec.done(s, str(e), wrong=True)
    except CallError as e:
        rec.done(s, f"{e.code.name}: {e.details}", wrong=False)
    except asyncio.TimeoutError:
        rec.done(s, f"no answer within {timeout:g} s", wrong=False)
    else:
        rec.done(s, None, wrong=False)


async def _worker(
    scenarios: Sequence[Scenario], rng: random.Random, opts: DemoOptions, rec: Recorder, stop: asyncio.Event
) -> None:
    weights = [s.weight for s in scenarios]
    while not stop.is_set():
        s = rng.choices(scenarios, weights)[0]
        await _call(s, rng, opts.call_timeout, rec)


# --- the topology ----------------------------------------------------------------


def path_names(nkn: bool) -> list[str]:
    """The demo's paths in the session's order (TCP paths first, then NKN)."""
    return ["tcp0", "tcp1"] + (["nkn"] if nkn else [])


class Topology:
    """The local NKN node, the end gateway, two fault relays and the client
    gateway, all in this process; :meth:`cut` and :meth:`restore` a path."""

    def __init__(self, opts: DemoOptions, facility: str, exchange: str) -> None:
        self.opts = opts
        self.facility = facility
        self.exchange = exchange
        self.node: LocalNode | None = None
        self.end: Gateway | None = None
        self.client: Gateway | None = None
        self.relays: list[FaultRelay] = []
        self.names = path_names(opts.nkn)

    def transport(self, name: str) -> str:
        return "nkn" if name == "nkn" else "tcp"

    async def start(self) -> None:
        o = self.opts
        resi = {**DEMO_TIMERS, "Mode": o.mode, "ResumeTimeout": o.resume_timeout}
        end: dict[str, Any] = {"Tcp": {"Listen": ["127.0.0.1:0"] * 2, "Address": self.facility}, "Resi": {**resi, "Name": "end"}}
        client: dict[str, Any] = {"Tcp": {"Listen": "127.0.0.1:0"}, "Resi": {**resi, "Name": "client"}}
        if o.nkn:
            self.node = await LocalNode().start()
            end_id, client_id = Identity.generate(), Identity.generate()
            common = {"Subclients": 2, "RpcServers": self.node.rpc_url}
            end["Nkn"] = {"Seed": end_id.seed, **common}
            client["Nkn"] = {"Seed": client_id.seed, "Address": end_id.address, **common}
        # The facility's clients call the end gateway's reverse listener;
        # the client gateway forwards those calls to the exchange.
        end["Reverse"] = {"Listen": "127.0.0.1:0"}
        client["Reverse"] = {"Address": self.exchange}
        self.end = Gateway.from_dict(end, "<resi demo: end gateway>")
        await self.end.start()
        self.relays = [FaultRelay(a) for a in self.end.addresses]
        client["Tcp"]["Address"] = [r.address for r in self.relays]
        self.client = Gateway.from_dict(client, "<resi demo: client gateway>")
        await self.client.start()

    @property
    def exchange_entry(self) -> str:
        """Where the facility's clients reach the exchange: the end
        gateway's reverse listener."""
        assert self.end is not None
        return self.end.reverse_addresses[0]

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        if self.end is not None:
            await self.end.stop()
        for r in self.relays:
            r.close()
        if self.node is not None:
            await self.node.stop()

    def cut(self, name: str) -> None:
        if name == "nkn":
            assert self.node is not None
            self.node.set_loss(1.0)
        elif self.opts.tcp_fault == "reset":
            self.relays[int(name[3:])].kill()
        else:
            self.relays[int(name[3:])].blackhole()

    def restore(self, name: str) -> None:
        if name == "nkn":
            assert self.node is not None
            self.node.set_loss(0.0)
        else:
            self.relays[int(name[3:])].heal()

    async def stats(self) -> SessionStats | None:
        assert self.client is not None
        return await self.client.upstream_stats()

    async def live(self) -> list[str]:
        stats = await self.stats()
        if stats is None:
            return []
        return [self.names[p.path] for p in stats.paths if p.state == "up" and p.path < len(self.names)]

    async def wait_reverse(self, timeout: float) -> None:
        """Waits until the client gateway opened the reverse channel (calls
        at the reverse listener are refused UNAVAILABLE before)."""
        assert self.end is not None
        deadline = time.monotonic() + timeout
        while self.end.reverse_channels < 1:
            if time.monotonic() > deadline:
                raise DemoError(f"the client gateway opened no reverse channel within {timeout:g} s")
            await asyncio.sleep(0.05)

    async def wait_live(self, want: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            live = await self.live()
            if len(live) >= want or time.monotonic() > deadline:
                return live
            await asyncio.sleep(0.05)


# --- progress ----------------------------------------------------------------------


class Progress:
    """The live progress line (``\\r``-updated on a terminal, a plain line
    every few seconds otherwise) and event lines."""

    def __init__(self, out: TextIO | None, rec: Recorder, topo: Topology, duration: float) -> None:
        self.out = out
        self.rec = rec
        self.topo = topo
        self.duration = duration
        self.tty = bool(out is not None and getattr(out, "isatty", lambda: False)())
        self.events: list[tuple[float | None, str]] = []
        self.live: list[str] = []
        self._width = 0

    def event(self, text: str) -> None:
        """Records and prints an event; its time is seconds into the
        workload (None, printed ``setup``, before it started)."""
        t = self.rec.elapsed() if self.rec.w0 is not None else None
        self.events.append((t, text))
        if self.out is None:
            return
        if self.tty:
            self.out.write("\r" + " " * self._width + "\r")
        when = " setup" if t is None else f"{t:5.1f}s"
        self.out.write(f"[{when}] {text}\n")
        self.out.flush()

    def line(self) -> str:
        ok, failed, wrong = self.rec.totals()
        t = self.rec.elapsed()
        rate = (ok + failed + wrong) / t if t > 0.5 else 0.0
        paths = " ".join(n if n in self.live else n.upper() + "\u2717" for n in self.topo.names)
        stalled = self.rec.stalled_now()
        stall = " ".join(f"{d} stalled {s:.1f}s" for d, s in stalled.items()) or "no stall"
        longest = max([*self.rec.longest.values(), *stalled.values()], default=0.0)
        return (
            f"[{t:5.1f}s/{self.duration:g}s] calls {ok + failed + wrong} ({rate:.0f}/s) "
            f"lost {failed} wrong {wrong} | paths {paths} | {stall}, longest {longest:.2f}s"
        )

    async def run(self, stop: asyncio.Event) -> None:
        last_plain = -10.0
        while not stop.is_set():
            self.live = await self.topo.live()
            if self.out is not None:
                text = self.line()
                if self.tty:
                    pad = max(0, self._width - len(text))
                    self.out.write("\r" + text + " " * pad)
                    self._width = len(text)
                    self.out.flush()
                elif self.rec.elapsed() - last_plain >= 5.0:
                    last_plain = self.rec.elapsed()
                    self.out.write(text + "\n")
                    self.out.flush()
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass
        if self.out is not None and self.tty:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()


async def _watch_events(stream: Any, topo: Topology, progress: Progress, counts: dict[str, int], side: str) -> None:
    async for ev in stream:
        kind = ev.kind
        if kind in ("session_failed", "mismatch"):
            counts[kind] = counts.get(kind, 0) + 1
        if side != "client" and kind in ("path_up", "path_down"):
            continue  # the client gateway's view of paths is reported
        name = topo.names[ev.path] if ev.path is not None and ev.path < len(topo.names) else f"path {ev.path}"
        if kind == "path_up":
            progress.event(f"{name} is up{' again' if ev.readmitted else ''}")
        elif kind == "path_down":
            progress.event(f"{name} is down ({ev.reason})")
        else:
            progress.event(f"{side} gateway: {kind} {ev.reason or ''}".rstrip())


async def _schedule(cuts: Sequence[Cut], topo: Topology, progress: Progress, duration: float) -> None:
    actions = sorted(
        [(c.start, "cut", c.path) for c in cuts] + [(c.end, "restore", c.path) for c in cuts if c.end is not None]
    )
    for at, what, name in actions:
        delay = at * duration - progress.rec.elapsed()
        if delay > 0:
            await asyncio.sleep(delay)
        if what == "cut":
            how = "NKN node drops everything" if name == "nkn" else topo.opts.tcp_fault
            progress.event(f"cutting {name} ({how})")
            topo.cut(name)
        else:
            progress.event(f"restoring {name}")
            topo.restore(name)


def _path_rows(stats: SessionStats | None, topo: Topology) -> list[PathRow]:
    rows = []
    for p in stats.paths if stats else []:
        name = topo.names[p.path] if p.path < len(topo.names) else f"path{p.path}"
        rows.append(
            PathRow(
                name=name,
                transport=topo.transport(name),
                state=p.state,
                bytes_sent=p.bytes_sent,
                bytes_received=p.bytes_received,
                first_bytes=p.first_bytes,
                duplicate_bytes=p.duplicate_bytes,
                missed_bytes=p.missed_bytes,
                retransmitted_bytes=p.retransmitted_bytes,
                rtt_ms=None if p.rtt is None else round(p.rtt * 1000.0, 3),
                admissions=p.admissions,
            )
        )
    return rows


def _check_served(rec: Recorder, served: dict[tuple[str, str], int]) -> list[str]:
    """Fills in what each simulator received; every call made must have
    arrived exactly once (a failed one at most once)."""
    errors = []
    for key in sorted(set(served) | set(rec.rpcs)):
        r = rec.rpcs.setdefault(key, RpcStats(key[1], key[0]))
        r.served = served.get(key, 0)
        if not r.ok <= r.served <= r.ok + r.failed + r.wrong:
            errors.append(f"{r.rpc}: the simulator received {r.served} calls, {r.ok + r.failed + r.wrong} were made ({r.ok} answered)")
    return errors


def _dups(paths: Sequence[PathStats]) -> int:
    return sum(p.duplicate_bytes for p in paths)


def _check_options(o: DemoOptions) -> None:
    if o.mode not in ("strict", "permissive"):
        raise DemoError(f"--mode: expected strict or permissive, got {o.mode!r}")
    if not o.duration > 0:
        raise DemoError(f"--duration: expected a positive number of seconds, got {o.duration}")
    if o.concurrency < 1:
        raise DemoError(f"--concurrency: expected at least 1, got {o.concurrency}")
    if o.tcp_fault not in ("silence", "reset"):
        raise DemoError(f"--tcp-fault: expected silence or reset, got {o.tcp_fault!r}")
    if not o.call_timeout > 0:
        raise DemoError(f"--call-timeout: expected a positive number of seconds, got {o.call_timeout}")
    if not o.resume_timeout > 0:
        raise DemoError(f"--resume-timeout: expected a positive number of seconds, got {o.resume_timeout}")


async def run_demo(options: DemoOptions | None = None) -> DemoSummary:
    """Runs the demo (see the module doc) and returns its summary; raises
    :class:`DemoError` if a part cannot be set up."""
    o = options or DemoOptions()
    _check_options(o)
    spec = o.cuts if o.cuts is not None else DEFAULT_CUTS if o.nkn else DEFAULT_CUTS_TCP
    cuts = spec if isinstance(spec, list) else parse_cuts(spec, path_names(o.nkn), o.duration)
    if _IMPORT_ERROR is not None:
        raise DemoError(f"the simulators need grpcio and cryptography: pip install resi ({_IMPORT_ERROR})")
    workload = EsiWorkload(o.seed)
    facility, exchange = await workload.start()
    topo = Topology(o, facility, exchange)
    try:
        await topo.start()
        return await _run(o, topo, workload, cuts)
    finally:
        await topo.stop()
        await workload.stop()


async def _run(o: DemoOptions, topo: Topology, workload: EsiWorkload, cuts: list[Cut]) -> DemoSummary:
    assert topo.client is not None and topo.end is not None
    scenarios = workload.scenarios()
    rec = Recorder(scenarios, o.stall_threshold)
    progress = Progress(o.progress, rec, topo, o.duration)
    counts: dict[str, int] = {}
    streams = [(topo.client.events(), "client"), (topo.end.events(), "end")]
    watchers = [asyncio.ensure_future(_watch_events(s, topo, progress, counts, side)) for s, side in streams]
    errors: list[str] = []
    clients: list[Client] = []
    try:
        progress.event(f"starting: {o.mode} mode, paths {', '.join(topo.names)}, waiting for every path")
        live = await topo.wait_live(len(topo.names), timeout=30.0)
        if len(live) < len(topo.names):
            raise DemoError(f"only {', '.join(live) or 'no path'} of {', '.join(topo.names)} came up within 30 s")
        progress.event("all paths up")
        # The exchange's calls enter at the client gateway; the facility's
        # at the end gateway's reverse listener.
        ex = await Client.connect(topo.client.address)
        clients.append(ex)
        fac = await Client.connect(topo.exchange_entry)
        clients.append(fac)
        await topo.wait_reverse(timeout=15.0)
        progress.event("registering the facility with the exchange")
        try:
            made = await asyncio.wait_for(workload.setup(ex, fac, topo.client.address, topo.exchange_entry), 30)
        except (CallError, WrongAnswer, asyncio.TimeoutError, TimeoutError) as e:
            raise DemoError(f"the registration failed: {type(e).__name__}: {e}") from None
        for direction, rpc in made:
            rec.count(direction, rpc)
        rec.start(workload.directions)
        setup = rec.now()
        progress.event(f"registered; {o.concurrency} callers per direction for {o.duration:g} s")
        stop = asyncio.Event()
        rng = random.Random(o.seed)
        workers = [
            asyncio.ensure_future(
                _worker([s for s in scenarios if s.direction == d], random.Random(rng.getrandbits(64)), o, rec, stop)
            )
            for d in workload.directions
            for _ in range(o.concurrency)
        ]
        prog_stop = asyncio.Event()
        prog = asyncio.ensure_future(progress.run(prog_stop))
        sched = asyncio.ensure_future(_schedule(cuts, topo, progress, o.duration))
        await asyncio.sleep(o.duration)
        stop.set()
        await asyncio.gather(*workers)
        rec.finish()
        elapsed = rec.elapsed()
        await asyncio.wait([sched], timeout=1.0)  # a restore due at 100 %
        sched.cancel()
        errors += _check_served(rec, workload.served())
        want = len(topo.names) - sum(1 for c in cuts if c.end is None)
        live = await topo.wait_live(want, timeout=5.0)
        prog_stop.set()
        await prog
        down = [n for n in topo.names if n not in live and not any(c.path == n and c.end is None for c in cuts)]
        client_stats = await topo.stats()
        end_stats = await topo.end.session_stats()
    finally:
        for c in clients:
            await c.close()
        for w in watchers:
            w.cancel()
        for s, _ in streams:
            s.close()
    return DemoSummary(
        mode=o.mode,
        duration=o.duration,
        elapsed=round(elapsed, 3),
        setup_seconds=round(setup, 3),
        paths=list(topo.names),
        rpcs=list(rec.rpcs.values()),
        path_stats=_path_rows(client_stats, topo),
        duplicates_removed={
            "client": _dups(client_stats.paths) if client_stats else 0,
            "end": sum(_dups(s.paths) for s in end_stats),
        },
        longest_stall={d: round(v, 3) for d, v in rec.longest.items()},
        stalls=dict(rec.stalls),
        stall_threshold=o.stall_threshold,
        events=progress.events,
        cuts=cuts,
        paths_down_at_end=down,
        session_failures=counts.get("session_failed", 0),
        mismatches=counts.get("mismatch", 0),
        errors=errors,
    )


# --- the command ---------------------------------------------------------------


def _seconds(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected seconds (e.g. 30, 12.5s, 800ms), got {text!r}")
    v = float(m.group(1))
    return v / 1000.0 if m.group(2) == "ms" else v


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resi demo",
        description=(
            "The whole mission on this machine, in one process with no network: a simulated facility behind "
            "an end gateway, a client gateway joined to it by two TCP paths and an NKN path (embedded local "
            "NKN node), ESI calls made both ways and checked, paths cut and restored, then a summary. "
            "Exit status 0 only if no call was lost or wrong and every path came back."
        ),
    )
    p.add_argument("--mode", choices=["strict", "permissive"], default="strict", help="session mode (default: strict)")
    p.add_argument("--duration", type=_seconds, default=30.0, metavar="SECONDS", help="how long calls are made (default: 30)")
    p.add_argument(
        "--cut",
        default=None,
        metavar="SCHEDULE",
        help=(
            "which paths to cut and when: 'none', or PATH[@START[-END]],... with PATH tcp0, tcp1 or nkn and times "
            "as 30%% of the run or 9s; END 'never' leaves it cut; untimed paths are cut between 30%% and 55%% and "
            f"restored at 75%% (default: {DEFAULT_CUTS.replace('%', '%%')}; with --no-nkn {DEFAULT_CUTS_TCP.replace('%', '%%')})"
        ),
    )
    p.add_argument("--no-nkn", action="store_true", help="two TCP paths only, no local NKN node")
    p.add_argument("--tcp-fault", choices=["silence", "reset"], default="silence",
                   help="how a TCP path is cut: silence (drops everything) or reset (connections reset) (default: silence)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="concurrent callers per direction (default: 4)")
    p.add_argument("--seed", type=int, default=1, help="seed of the workload's random choices (default: 1)")
    p.add_argument("--call-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="a call not answered within this is lost (default: 10)")
    p.add_argument("--resume-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="[Resi] ResumeTimeout of both gateways: how long a session outlives losing every path (default: 30)")
    p.add_argument("--stall-threshold", type=_seconds, default=0.5, metavar="SECONDS",
                   help="a gap between answers longer than this counts as a stall (default: 0.5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (progress stays on stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress line and no event lines")
    p.add_argument("--log-level", default="error", metavar="LEVEL",
                   help="log records of resi (gateways, simulators) at this level and above go to stderr (default: error)")
    return p


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("resi demo: log: %(name)s %(levelname)s: %(message)s"))
    log = logging.getLogger("resi")
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    refresh_logging()


def main(argv: Sequence[str] | None = None) -> int:
    """``resi demo [OPTIONS]``: runs the demo, prints the summary, returns
    the exit status (0 passed, 1 a call was lost or wrong or a path did not
    come back, 2 bad options or a part that did not start, 130 interrupted)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        _log_to_stderr(args.log_level)
    except ValueError:
        print(f"resi demo: error: --log-level: expected debug, info, warning or error, got {args.log_level!r}", file=sys.stderr)
        return 2
    opts = DemoOptions(
        mode=args.mode,
        duration=args.duration,
        cuts=args.cut,
        nkn=not args.no_nkn,
        concurrency=args.concurrency,
        seed=args.seed,
        call_timeout=args.call_timeout,
        tcp_fault=args.tcp_fault,
        resume_timeout=args.resume_timeout,
        stall_threshold=args.stall_threshold,
        progress=None if args.quiet else sys.stderr,
    )
    try:
        summary = asyncio.run(run_demo(opts))
    except DemoError as e:
        print(f"resi demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # asyncio.run cancelled the demo: everything is stopped
        print("\nresi demo: interrupted", file=sys.stderr)
        return 130
    if args.json:
        json.dump(summary.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(summary.format())
    sys.stdout.flush()
    return 0 if summary.passed else 1
