"""Fixtures for the Python test suite: real `resi` processes on 127.0.0.1 and
a grpcio ESI server.

- ``resi``: a factory that starts the installed ``resi`` command with a config
  file and reads the addresses it prints (``resi: listening on ADDR``). Every
  process it started is killed at teardown.
- ``esi_server``: a grpcio server (generic handlers, raw bytes) with the echo
  methods of ``grpc_helpers`` and ``/esi.Esi/Modify``.
- ``esi_services``: the three SolarNetwork ESI services on generated
  servicers (``esi_servicer.EsiServices``, a grpc.aio server).

Two guards keep a broken run short and readable (CI shows only ``-q``
output): a failure's report is printed as soon as the test fails, and a
test still running 60 s after its pytest-timeout limit (which a thread
stuck outside Python can defeat) makes faulthandler print every thread's
stack and end the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import faulthandler

import pytest

from resi import testing

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from esi_servicer import EsiServices, serve_esi  # noqa: E402
from grpc_helpers import EsiServer  # noqa: E402

#: Beyond a test's pytest-timeout limit, seconds before the whole run is ended.
HARD_STOP_GRACE = 60


def _timeout_of(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        return float(marker.args[0])
    try:
        return float(item.config.getini("timeout") or 120)
    except ValueError:  # pytest-timeout not loaded
        return 120.0


_real_stderr = None


def pytest_configure(config: pytest.Config) -> None:
    # A copy of the terminal's stderr, taken while capturing is suspended: a
    # test's own stderr is a capture file that os._exit would discard.
    global _real_stderr
    _real_stderr = os.fdopen(os.dup(sys.__stderr__.fileno()), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    faulthandler.dump_traceback_later(_timeout_of(item) + HARD_STOP_GRACE, exit=True, file=_real_stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed and _real_stderr is not None:
        _real_stderr.write(f"\n=== FAILED {report.nodeid} ({report.when}) ===\n{report.longreprtext}\n")
        _real_stderr.flush()


LISTENING = re.compile(r"^resi: listening on (\S+)\s*$")


def resi_command() -> str:
    """The installed ``resi`` command (``resi.testing.resi_command``)."""
    try:
        return testing.resi_command()
    except RuntimeError as e:
        pytest.fail(str(e))


def run_resi(*args: str, timeout: float = 30, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs ``resi ARGS`` to completion (with a timeout) and returns the result."""
    return subprocess.run(
        [resi_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RESI_LOG", "info")
    env["NO_COLOR"] = "1"
    return env


class ResiProcess:
    """A running ``resi`` process whose stderr is read by a thread."""

    def __init__(self, args: list[str], cwd: Path, name: str):
        self.name = name
        self.args = args
        self.proc = subprocess.Popen(
            [resi_command(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=_env(),
            start_new_session=True,  # a Ctrl-C of the test run does not reach it
        )
        self.lines: list[str] = []
        self.addrs: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name=f"stderr-{name}", daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    m = LISTENING.match(line)
                    if m:
                        self.addrs.append(m.group(1))
                    self._cond.notify_all()
        except (ValueError, OSError):
            pass  # kill() closed the pipe: the end of what there is to read
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            for _ in self.proc.stdout:
                pass
        except (ValueError, OSError):
            pass  # closed by kill()

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_listening(self, count: int = 1, timeout: float = 20) -> list[str]:
        """Waits until the process printed ``count`` listening addresses."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.addrs) < count:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
            if len(self.addrs) < count:
                code = self.proc.poll()
                raise AssertionError(
                    f"{self.name}: expected {count} 'listening on' lines within {timeout}s "
                    f"(exit code {code}); stderr:\n" + "\n".join(self.lines)
                )
            return list(self.addrs[:count])

    def wait_for_line(self, pattern: str, timeout: float = 20) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(f"{self.name}: no line matching {pattern!r}; stderr:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not exit within {timeout}s; stderr:\n{self.stderr}")
        self._reader.join(timeout=5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # The readers see EOF once the process is gone; a child still
        # holding the pipe open is given a moment, then the pipe is closed.
        for reader in (self._reader, self._out_reader):
            reader.join(timeout=2)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except Exception:
                pass


class ResiFactory:
    """Starts ``resi`` processes; the fixture kills them all at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[ResiProcess] = []
        self._n = 0

    def config(self, text: str, name: str | None = None) -> Path:
        self._n += 1
        path = self.tmp_path / (name or f"gateway{self._n}.toml")
        path.write_text(text)
        return path

    def start(self, config_text: str | None = None, *, args: list[str] | None = None, name: str = "resi") -> ResiProcess:
        if args is None:
            assert config_text is not None
            path = self.config(config_text, f"{name}.toml")
            args = ["gateway", "--config", str(path)]
        p = ResiProcess(args, self.tmp_path, name)
        self.procs.append(p)
        return p

    def gateway(self, *, listen: list[str] | str, address: list[str] | str, mode: str = "strict", name: str = "gw", extra: str = "") -> ResiProcess:
        """Starts a gateway and waits for its listening lines."""
        listen_l = [listen] if isinstance(listen, str) else listen
        p = self.start(gateway_config(listen=listen_l, address=address, mode=mode, name=name, extra=extra), name=name)
        p.wait_listening(len(listen_l))
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            p.kill()


def toml_list(v: list[str] | str) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    return "[" + ", ".join(f'"{x}"' for x in v) + "]"


def gateway_config(*, listen: list[str] | str, address: list[str] | str, mode: str = "strict", name: str = "gw", extra: str = "") -> str:
    return (
        "[Tcp]\n"
        f"Listen = {toml_list(listen)}\n"
        f"Address = {toml_list(address)}\n"
        "[Resi]\n"
        f'Mode = "{mode}"\n'
        f'Name = "{name}"\n'
        "ShutdownGrace = \"10s\"\n"
        f"{extra}"
    )


@pytest.fixture
def resi(tmp_path: Path) -> Iterator[ResiFactory]:
    f = ResiFactory(tmp_path)
    try:
        yield f
    finally:
        f.kill_all()


@pytest.fixture
def esi_server() -> Iterator[EsiServer]:
    s = EsiServer()
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def esi_services() -> AsyncIterator[EsiServices]:
    async with serve_esi() as node:
        yield node


@pytest.fixture
def two_gateways(resi: ResiFactory, esi_server: EsiServer, request):
    """A client gateway and an end gateway joined by two TCP paths, in the
    mode given by ``request.param`` (default strict). Yields
    ``(client_gateway, end_gateway, client_target)``."""
    mode = getattr(request, "param", "strict")
    end = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, mode=mode, name="end")
    client = resi.gateway(listen="127.0.0.1:0", address=end.addrs[:2], mode=mode, name="client")
    yield client, end, client.addrs[0]


__all__ = ["ResiFactory", "ResiProcess", "gateway_config", "run_resi", "resi_command", "signal"]
