"""The fault matrix: every fault of the fault tool, under load, in each mode.

``python -m resi.matrix`` (``--short``, the default; ``--long``; ``--soak``)
runs calls of all four RPC shapes from concurrent callers through a gateway
pair while one fault at a time is applied, and checks every answer: its
content, the order of stream messages, and that the upstream received each
call exactly once. A cell is one fault in one mode; its row counts calls,
failed calls (an error the caller saw), lost calls (neither answered nor
failed within the hard bound), calls delivered twice, corrupted answers,
answers out of order, and the stall (the longest gap between two successful
completions). Everything binds to 127.0.0.1 and every wait is bounded.

Why a module and not a test: the same runner serves the short CI cells
(tests/test_fault_matrix.py), the long table of docs/reliability.md and the
soak, so the numbers in the docs come from the code the tests run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional

from . import Client, FaultRelay, Gateway, refresh_logging
from .errors import CallError
from .nkn import Identity, LocalNode
from .testing import FAST_TIMERS, EsiNode, resi_command

ECHO = "/resi.test.Echo"
STREAM_LEN = 4  # messages per server/client/bidi stream
CALL_TIMEOUT = 20.0  # the gRPC deadline of each call
HARD_BOUND = CALL_TIMEOUT + 10.0  # no answer and no error by then: lost


class CountingNode(EsiNode):
    """The echo upstream, recording how often it received each call (keyed
    by the call's first message), so duplicates are seen where they would
    do harm."""

    def __init__(self) -> None:
        super().__init__(max_workers=128)
        self.seen: collections.Counter[bytes] = collections.Counter()

    def _record(self, key: bytes) -> None:
        with self._lock:
            self.seen[key] += 1

    def _unary(self, request: bytes, context: Any) -> bytes:
        self._record(request)
        return request

    def _server_stream(self, request: bytes, context: Any) -> Any:
        self._record(request)
        for i in range(STREAM_LEN):
            yield request + b"/%d" % i

    def _client_stream(self, requests: Any, context: Any) -> bytes:
        msgs = list(requests)
        if msgs:
            self._record(msgs[0])
        return b"|".join(msgs)

    def _bidi(self, requests: Any, context: Any) -> Any:
        first = True
        for m in requests:
            if first:
                self._record(m)
                first = False
            yield m


# ---------------------------------------------------------------------------
# Callers: the four shapes over a resi Client (in-process client gateway, or
# plain gRPC to a client gateway process)


async def _call(client: Client, shape: str, key: bytes) -> tuple[bool, bool]:
    """One call of ``shape``; returns ``(content_ok, order_ok)``. Raises
    :class:`CallError` for a failed call."""
    msgs = [key + b".%d" % i for i in range(STREAM_LEN)]
    if shape == "unary":
        got = await client.unary(f"{ECHO}/Unary", key, timeout=CALL_TIMEOUT)
        return got == key, True
    if shape == "server":
        replies = [r async for r in client.server_stream(f"{ECHO}/ServerStream", key, timeout=CALL_TIMEOUT)]
        want = [key + b"/%d" % i for i in range(STREAM_LEN)]
        return sorted(replies) == sorted(want), replies == want or sorted(replies) != sorted(want)
    msgs[0] = key
    if shape == "client":
        got = await client.client_stream(f"{ECHO}/ClientStream", msgs, timeout=CALL_TIMEOUT)
        parts = got.split(b"|")
        return sorted(parts) == sorted(msgs), parts == msgs or sorted(parts) != sorted(msgs)
    replies = [r async for r in client.bidi(f"{ECHO}/Bidi", msgs, timeout=CALL_TIMEOUT)]
    return sorted(replies) == sorted(msgs), replies == msgs or sorted(replies) != sorted(msgs)


SHAPES = ("unary", "server", "client", "bidi")


@dataclass
class Row:
    """One cell's result (see the module doc)."""

    cell: str
    mode: str
    calls: int = 0
    ok: int = 0
    failed: int = 0
    lost: int = 0
    twice: int = 0
    corrupted: int = 0
    disordered: int = 0
    stall: float = 0.0
    seconds: float = 0.0
    first_error: str = ""
    note: str = ""

    @property
    def expected(self) -> str:
        """Why corruption is expected in this cell by design ("" if it is not)."""
        return EXPECTED_CORRUPTION.get((self.cell, self.mode), "")

    @property
    def passed(self) -> bool:
        corrupted = 0 if self.expected else self.corrupted
        return self.calls > 0 and not (self.lost or self.twice or corrupted or self.disordered)


#: Cells whose corruption the mode does not promise to catch (protocol
#: §10.5): a tamperer recomputes the CRC, and permissive mode compares
#: copies only while the late copy is still buffered.
EXPECTED_CORRUPTION = {("tamper", "permissive"): "permissive mode does not promise to catch a recomputed CRC (protocol §10.5)"}


class Load:
    """At least ``calls`` calls, for at least ``seconds``, from
    ``concurrency`` callers, shapes in rotation; faults are scheduled on
    :meth:`elapsed` shares of ``seconds``."""

    def __init__(self, node: CountingNode, calls: int, concurrency: int, tag: str, seconds: float = 0.0) -> None:
        self.node, self.calls, self.concurrency, self.tag, self.seconds = node, calls, concurrency, tag, seconds
        self.t0 = time.monotonic()
        self.started = 0
        self.done = 0
        self.ok_times: list[float] = []
        self.keys: list[bytes] = []
        self.row_counts: collections.Counter[str] = collections.Counter()
        self.first_error = ""
        self.stop = False

    async def run(self, client_of: Callable[[], Client]) -> None:
        await asyncio.gather(*(self._worker(client_of) for _ in range(self.concurrency)))

    async def _worker(self, client_of: Callable[[], Client]) -> None:
        while not self.stop and (self.started < self.calls or self.elapsed() < self.seconds):
            n = self.started
            self.started += 1
            shape = SHAPES[n % len(SHAPES)]
            key = b"%s-%d" % (self.tag.encode(), n)
            self.keys.append(key)
            try:
                content, order = await asyncio.wait_for(_call(client_of(), shape, key), HARD_BOUND)
            except asyncio.TimeoutError:
                self.row_counts["lost"] += 1
            except CallError as e:
                self.row_counts["failed"] += 1
                self.first_error = self.first_error or f"{shape}: {e}"
                await asyncio.sleep(0.05)  # a failing caller does not spin
            else:
                if not content:
                    self.row_counts["corrupted"] += 1
                elif not order:
                    self.row_counts["disordered"] += 1
                else:
                    self.row_counts["ok"] += 1
                    self.ok_times.append(time.monotonic())
            self.done += 1

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def fill(self, row: Row, started: float, ended: float) -> None:
        row.calls = self.done
        for k in ("ok", "failed", "lost", "corrupted", "disordered"):
            setattr(row, k, self.row_counts[k])
        with self.node._lock:
            row.twice = sum(1 for k in self.keys if self.node.seen[k] > 1)
        times = [started] + self.ok_times + [ended]
        row.stall = max(b - a for a, b in zip(times, times[1:]))
        row.seconds = ended - started
        row.first_error = self.first_error


# ---------------------------------------------------------------------------
# The cells. A fault is a coroutine given the fixture and the load; it waits
# for the load to reach a share of its calls, applies the fault, and lifts it.


async def _until(load: Load, share: float) -> None:
    """Waits until ``share`` of the load's minimum duration has passed."""
    while load.elapsed() < load.seconds * share and not load.stop:
        await asyncio.sleep(0.02)


def _relay_fault(apply: Callable[[FaultRelay], None]) -> Callable[[Any, Load], Awaitable[None]]:
    async def fault(fx: Any, load: Load) -> None:
        await _until(load, 0.2)
        apply(fx.relays[0])
        await _until(load, 0.7)
        fx.relays[0].heal()

    return fault


async def _flap_all(fx: Any, load: Load) -> None:
    """One path down at a time in rotation (black-hole, then kill): every
    path flaps, never all together."""
    await _until(load, 0.1)
    k = 0
    while load.elapsed() < load.seconds * 0.8 and not load.stop:
        r = fx.relays[k % len(fx.relays)]
        r.blackhole() if k % 2 == 0 else r.kill()
        await asyncio.sleep(0.6)
        r.heal()
        await asyncio.sleep(0.2)
        k += 1


async def _all_down(fx: Any, load: Load) -> None:
    await _until(load, 0.3)
    for r in fx.relays:
        r.blackhole()
    await asyncio.sleep(3.0)
    for r in fx.relays:
        r.heal()


async def _restart(fx: Any, load: Load, which: str) -> None:
    await _until(load, 0.3)
    await asyncio.get_running_loop().run_in_executor(None, fx.restart, which)


async def _restart_end(fx: Any, load: Load) -> None:
    await _restart(fx, load, "end")


async def _restart_client(fx: Any, load: Load) -> None:
    await _restart(fx, load, "client")


def _nkn_fault(apply: Callable[[Any], object], tcp_down: bool = False) -> Callable[[Any, Load], Awaitable[None]]:
    """A fault of the local NKN node (``apply(node)``) on the NKN path;
    with ``tcp_down`` the TCP path is killed meanwhile, so the faulty NKN
    path carries every call alone."""

    async def fault(fx: Any, load: Load) -> None:
        await _until(load, 0.2)
        apply(fx.node)
        if tcp_down:
            fx.relays[0].kill()
        await _until(load, 0.7)
        fx.node.set_loss(0.0)
        fx.node.set_faults()
        fx.relays[0].heal()

    return fault


#: cell name -> (fixture kind, fault). "pair": an in-process end gateway and
#: redundant client, three TCP paths each through a FaultRelay; "procs":
#: `resi gateway` processes (client gateway, end gateway) on fixed ports.
CELLS: dict[str, tuple[str, Callable[[Any, Load], Awaitable[None]]]] = {
    "none": ("pair", lambda fx, load: asyncio.sleep(0)),
    "kill": ("pair", _relay_fault(lambda r: r.kill())),
    "blackhole": ("pair", _relay_fault(lambda r: r.blackhole())),
    "delay+jitter": ("pair", _relay_fault(lambda r: r.delay(0.05, 0.05))),
    "bandwidth": ("pair", _relay_fault(lambda r: r.bandwidth(20_000))),
    "corrupt": ("pair", _relay_fault(lambda r: r.corrupt(0.001))),
    "tamper": ("pair", _relay_fault(lambda r: r.tamper(0.05))),
    "flap-one": ("pair", _relay_fault(lambda r: r.flap(0.4, 0.6, 600.0, "kill"))),
    "flap-all": ("pair", _flap_all),
    "all-down-3s": ("pair", _all_down),
    "nkn-loss": ("nkn", _nkn_fault(lambda n: n.set_loss(0.3))),
    "nkn-reorder": ("nkn", _nkn_fault(lambda n: n.set_faults(reorder=0.3))),
    "nkn-duplicate": ("nkn", _nkn_fault(lambda n: n.set_faults(duplicate=0.3))),
    "nkn-delay+jitter": ("nkn", _nkn_fault(lambda n: n.set_faults(delay=0.05, jitter=0.05))),
    "nkn-alone-lossy": ("nkn", _nkn_fault(lambda n: (n.set_loss(0.1), n.set_faults(duplicate=0.1, reorder=0.1)), tcp_down=True)),
    "restart-end": ("procs", _restart_end),
    "restart-client": ("procs", _restart_client),
}
SHORT_CELLS = ["kill", "blackhole", "corrupt", "flap-all", "all-down-3s", "nkn-alone-lossy", "restart-end"]


class PairFixture:
    """An end gateway (in-process) in front of the node and a redundant
    client over three fault relays."""

    def __init__(self, node: CountingNode, mode: str) -> None:
        self.node, self.mode = node, mode
        self.end: Optional[Gateway] = None
        self.client: Optional[Client] = None
        self.relays: list[FaultRelay] = []

    async def __aenter__(self) -> PairFixture:
        self.end = Gateway(listen=["127.0.0.1:0"] * 3, address=self.node.address, mode=self.mode, name="end", **FAST_TIMERS)
        await self.end.start()
        self.relays = [FaultRelay(a) for a in self.end.addresses]
        keys: dict[str, Any] = dict(FAST_TIMERS)
        self.client = await Client.connect_redundant([r.address for r in self.relays], mode=self.mode, **keys)
        return self

    def caller(self) -> Client:
        assert self.client is not None
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self.client is not None:
                await self.client.close()
        finally:
            try:
                if self.end is not None:
                    await self.end.stop()
            finally:
                for r in self.relays:
                    r.close()


class NknFixture:
    """In-process gateways (client, end) joined by a TCP path through a
    fault relay and an NKN path over a local NKN node; callers use plain
    gRPC to the client gateway. ``node`` here is the :class:`LocalNode`."""

    def __init__(self, upstream: CountingNode, mode: str, clients: int = 4) -> None:
        self.upstream, self.mode, self.n_clients = upstream, mode, clients
        self.node = LocalNode()
        self.gateways: list[Gateway] = []
        self.relays: list[FaultRelay] = []
        self.clients: list[Client] = []
        self._next = 0

    async def __aenter__(self) -> NknFixture:
        await self.node.__aenter__()
        try:
            end_id, client_id = Identity.generate(), Identity.generate()
            nkn = {"nkn_rpc_servers": [self.node.rpc_url], "nkn_subclients": 2}
            end = Gateway(
                listen="127.0.0.1:0", address=self.upstream.address, mode=self.mode, name="end", nkn_seed=end_id.seed, **nkn, **FAST_TIMERS
            )
            await end.start()
            self.gateways.append(end)
            self.relays = [FaultRelay(end.address)]
            gw = Gateway(
                listen="127.0.0.1:0",
                address=self.relays[0].address,
                mode=self.mode,
                name="client",
                nkn_seed=client_id.seed,
                nkn_address=end_id.address,
                **nkn,
                **FAST_TIMERS,
            )
            await gw.start()
            self.gateways.append(gw)
            deadline = time.monotonic() + 30
            while True:
                stats = await gw.upstream_stats()
                if stats and sum(p.state == "up" for p in stats.paths) == 2:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the NKN path did not come up: {stats and stats.paths}")
                await asyncio.sleep(0.1)
            for _ in range(self.n_clients):
                self.clients.append(await Client.connect(gw.address, connect_timeout=10))
        except BaseException:
            await self.__aexit__()
            raise
        return self

    def caller(self) -> Client:
        self._next += 1
        return self.clients[self._next % len(self.clients)]

    async def __aexit__(self, *exc: object) -> None:
        try:
            for c in self.clients:
                await c.close()
            for g in reversed(self.gateways):
                await g.stop()
        finally:
            for r in self.relays:
                r.close()
            await self.node.__aexit__(None, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A `resi gateway --config FILE` process; :meth:`wait_listening` waits
    for its ``resi: listening on`` lines."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.lines: list[str] = []
        env = {**os.environ, "RESI_LOG": os.environ.get("RESI_LOG", "warn"), "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [resi_command(), "gateway", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_listening(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while sum("resi: listening on" in line for line in list(self.lines)) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.config.name}: not listening:\n" + "\n".join(self.lines[-20:]))
            time.sleep(0.02)

    def _status_kib(self, key: str) -> int:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def rss_kib(self) -> int:
        """Resident memory now (VmRSS), 0 if unknown."""
        return self._status_kib("VmRSS")

    def peak_rss_kib(self) -> int:
        """Peak resident memory (VmHWM), 0 if unknown."""
        return self._status_kib("VmHWM")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class ProcFixture:
    """A client gateway process and an end gateway process (two TCP paths,
    fixed ports, so either can be killed and restarted on the same ports);
    the callers use plain gRPC to the client gateway (``resi.Client.connect``)."""

    def __init__(self, node: CountingNode, mode: str, workdir: Path, clients: int = 4, paths: int = 2) -> None:
        self.node, self.mode, self.workdir, self.n_clients = node, mode, workdir, clients
        self.end_ports = [_free_port() for _ in range(paths)]
        self.client_port = _free_port()
        timers = "\n".join(f"{''.join(w.capitalize() for w in k.split('_'))} = \"{v}\"" for k, v in FAST_TIMERS.items())
        common = f'[Resi]\nMode = "{mode}"\nShutdownGrace = "1s"\n{timers}\n'
        ends = ", ".join(f'"127.0.0.1:{p}"' for p in self.end_ports)
        self.configs = {
            "end": self._write("end.toml", f'[Tcp]\nListen = [{ends}]\nAddress = "{node.address}"\n{common}Name = "end"\n'),
            "client": self._write(
                "client.toml", f'[Tcp]\nListen = "127.0.0.1:{self.client_port}"\nAddress = [{ends}]\n{common}Name = "client"\n'
            ),
        }
        self.procs: dict[str, Proc] = {}
        self.clients: list[Client] = []
        self._next = 0

    def _write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def _start(self, which: str) -> None:
        self.procs[which] = Proc(self.configs[which])
        self.procs[which].wait_listening(len(self.end_ports) if which == "end" else 1)

    def restart(self, which: str) -> None:
        """``kill -9`` of one gateway, then the same config on the same ports."""
        self.procs[which].kill()
        time.sleep(0.3)
        self._start(which)

    async def __aenter__(self) -> ProcFixture:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start, "end")
        await loop.run_in_executor(None, self._start, "client")
        for _ in range(self.n_clients):
            self.clients.append(await Client.connect(f"127.0.0.1:{self.client_port}", connect_timeout=10))
        return self

    def caller(self) -> Client:
        self._next += 1
        return self.clients[self._next % len(self.clients)]

    async def __aexit__(self, *exc: object) -> None:
        try:
            for c in self.clients:
                await c.close()
        finally:
            for p in self.procs.values():
                p.kill()


async def run_cell(
    node: CountingNode, cell: str, mode: str, calls: int, concurrency: int, workdir: Path, limit: float, seconds: float
) -> Row:
    """Runs one cell: fixture up, load with its fault, every answer checked."""
    kind, fault = CELLS[cell]
    row = Row(cell=cell, mode=mode)
    fx: Any = PairFixture(node, mode) if kind == "pair" else NknFixture(node, mode) if kind == "nkn" else ProcFixture(node, mode, workdir)
    async with fx:
        load = Load(node, calls, concurrency, f"{cell}/{mode}/{time.monotonic_ns()}", seconds)
        started = time.monotonic()
        faulter = asyncio.ensure_future(fault(fx, load))
        runner = asyncio.ensure_future(load.run(fx.caller))
        try:
            await asyncio.wait_for(asyncio.shield(runner), limit)
        except asyncio.TimeoutError:
            load.stop = True
            row.note = f"stopped at the {limit:.0f} s limit"
            await asyncio.wait_for(runner, HARD_BOUND + 5)
        ended = time.monotonic()
        load.stop = True
        try:
            await asyncio.wait_for(faulter, 20)
        except asyncio.TimeoutError:
            faulter.cancel()
        await asyncio.sleep(0.2)  # a late duplicate would reach the node now
        load.fill(row, started, ended)
    return row


async def run_matrix(
    cells: list[str], modes: list[str], calls: int, concurrency: int, limit: float, seconds: float, progress: Any = None
) -> list[Row]:
    """Runs ``cells`` × ``modes`` and returns their rows: each cell makes at
    least ``calls`` calls for at least ``seconds`` (the fault schedule's
    length), stopping at ``limit`` seconds."""
    node = CountingNode()
    node.start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="resi-matrix-") as tmp:
            for mode in modes:
                for cell in cells:
                    row = await run_cell(node, cell, mode, calls, concurrency, Path(tmp), limit, seconds)
                    rows.append(row)
                    if progress is not None:
                        print(_line(row), file=progress, flush=True)
    finally:
        node.stop()
    return rows


HEADER = "| cell | mode | calls | failed | lost | twice | corrupted | out of order | stall (s) | seconds | result |"


def _line(r: Row) -> str:
    ok = ("pass" if r.passed else "FAIL") + (" (by design: " + r.expected + ")" if r.expected and r.corrupted else "")
    return (
        f"| {r.cell} | {r.mode} | {r.calls} | {r.failed} | {r.lost} | {r.twice} | {r.corrupted} | "
        f"{r.disordered} | {r.stall:.2f} | {r.seconds:.1f} | {ok}{' (' + r.note + ')' if r.note else ''} |"
    )


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    sep = "|" + "|".join("---" for _ in range(HEADER.count("|") - 1)) + "|"
    return "\n".join([HEADER, sep] + [_line(r) for r in rows])


# ---------------------------------------------------------------------------
# The soak


@dataclass
class SoakResult:
    """The soak's figures (memory in KiB)."""

    minutes: float
    clients: int
    row: Row
    rss: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.row.passed


async def run_soak(minutes: float, clients: int, mode: str = "strict", progress: Any = None) -> SoakResult:
    """``clients`` concurrent callers (asyncio tasks over 8 plain gRPC
    connections) to a client gateway process joined to an end gateway
    process by three TCP paths through fault relays that flap in turn (one
    path down for 1.5 s, black-holed or killed, then 1.5 s all up: never all
    down), for ``minutes``; reports the gateways' peak RSS and RSS after
    the calls."""
    node = CountingNode()
    node.start()
    res = SoakResult(minutes=minutes, clients=clients, row=Row(cell="soak", mode=mode))
    try:
        with tempfile.TemporaryDirectory(prefix="resi-soak-") as tmp:
            fx = ProcFixture(node, mode, Path(tmp), clients=8, paths=3)
            # The client gateway dials the end through relays (its ports are fixed).
            relays = [FaultRelay(f"127.0.0.1:{p}") for p in fx.end_ports]
            try:
                addrs = ", ".join(f'"{r.address}"' for r in relays)
                text = fx.configs["client"].read_text().replace(
                    "Address = [" + ", ".join(f'"127.0.0.1:{p}"' for p in fx.end_ports) + "]", f"Address = [{addrs}]"
                )
                fx.configs["client"].write_text(text)
                async with fx:
                    load = Load(node, 1 << 62, clients, f"soak/{time.monotonic_ns()}")
                    started = time.monotonic()
                    runner = asyncio.ensure_future(load.run(fx.caller))
                    end_at = started + minutes * 60
                    k = 0
                    while time.monotonic() < end_at - 3:
                        r = relays[k % len(relays)]
                        r.blackhole() if k % 2 == 0 else r.kill()
                        await asyncio.sleep(1.5)
                        r.heal()
                        await asyncio.sleep(1.5)
                        k += 1
                        if progress is not None:
                            line = f"soak: {time.monotonic() - started:.0f}s {load.done} calls {dict(load.row_counts)} {load.first_error}"
                            print(line, file=progress, flush=True)
                    await asyncio.sleep(max(0.0, end_at - time.monotonic()))
                    for r in relays:
                        r.heal()
                    load.stop = True
                    await asyncio.wait_for(runner, HARD_BOUND + 30)
                    ended = time.monotonic()
                    peak = {w: fx.procs[w].peak_rss_kib() for w in ("client", "end")}
                    await asyncio.sleep(5)
                    res.rss = {w: {"peak": peak[w], "after": fx.procs[w].rss_kib()} for w in ("client", "end")}
                    await asyncio.sleep(0.2)
                    load.fill(res.row, started, ended)
            finally:
                for r in relays:
                    r.close()
    finally:
        node.stop()
    return res


def _quiet_logs() -> None:
    """Only errors from the in-process gateways (the faults make warnings by design)."""
    logging.getLogger("resi").setLevel(logging.ERROR)
    refresh_logging()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m resi.matrix", description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--short", action="store_true", help="a few hundred calls per cell, a subset of cells (default)")
    g.add_argument("--long", action="store_true", help="thousands of calls per cell, every cell")
    g.add_argument("--soak", action="store_true", help="1,000 concurrent callers under flapping for --minutes")
    p.add_argument("--cells", help="comma-separated cells (default: the short set; every cell with --long): " + ",".join(CELLS))
    p.add_argument("--modes", default="strict,permissive", help="comma-separated modes: strict, permissive")
    p.add_argument("--calls", type=int, help="calls per cell (short 300, long 3000)")
    p.add_argument("--seconds", type=float, help="minimum seconds of load per cell, the fault schedule (short 3, long 10)")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent callers per cell")
    p.add_argument("--minutes", type=float, default=30.0, help="soak duration")
    p.add_argument("--clients", type=int, default=1000, help="soak callers")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args(argv)
    modes = a.modes.split(",")
    if not modes or any(m not in ("strict", "permissive") for m in modes):
        p.error(f"--modes: expected strict and/or permissive, got {a.modes!r}")
    if a.soak:
        _quiet_logs()
        res = asyncio.run(run_soak(a.minutes, a.clients, modes[0], progress=sys.stderr))
        print(json.dumps({**asdict(res), "passed": res.passed}, indent=2))
        return 0 if res.passed else 1
    cells = a.cells.split(",") if a.cells else (list(CELLS) if a.long else SHORT_CELLS)
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        p.error(f"unknown cell(s) {', '.join(unknown)}; cells: {', '.join(CELLS)}")
    calls = a.calls or (3000 if a.long else 300)
    seconds = a.seconds if a.seconds is not None else (10.0 if a.long else 3.0)
    limit = 300.0 if a.long else 60.0
    _quiet_logs()
    rows = asyncio.run(run_matrix(cells, modes, calls, a.concurrency, limit, seconds, progress=sys.stderr))
    if a.json:
        print(json.dumps([{**asdict(r), "passed": r.passed} for r in rows], indent=2))
    else:
        print(table(rows))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
