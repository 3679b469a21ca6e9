"""A TCP relay with faults, for one path between two gateways.

``FaultRelay(target)`` listens on 127.0.0.1 (a free port) and forwards every
connection to ``target`` ("host:port"). Faults, switchable at any time from
any thread:

- ``kill()``: close every open connection (both sides, like a crashed link)
  and refuse new ones (accepted and closed at once) until ``heal()``.
- ``blackhole()``: keep connections open but silently drop all bytes in both
  directions; new connections are accepted and never answered.
- ``heal()``: back to forwarding; connections closed by ``kill`` stay closed
  (the gateway must redial), black-holed ones resume forwarding.

It runs an asyncio loop on its own thread, so sync tests (grpcio) can use it;
``async with FaultRelay(...)`` works too.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Optional

PASS, KILL, BLACKHOLE = "pass", "kill", "blackhole"


class FaultRelay:
    def __init__(self, target: str, name: str = "relay"):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.name = name
        self.mode = PASS
        self.port: int = 0
        self.connections = 0  # accepted so far
        self.bytes_forwarded = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: Optional[threading.Thread] = None
        self._started = threading.Event()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> "FaultRelay":
        self._thread = threading.Thread(target=self._run, name=f"faultrelay-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fault relay did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def close(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return

        async def _close():
            assert self._server is not None
            self._server.close()
            self._abort_all()
            await asyncio.sleep(0)

        try:
            asyncio.run_coroutine_threadsafe(_close(), self._loop).result(10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> "FaultRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> "FaultRelay":
        await asyncio.get_running_loop().run_in_executor(None, self.start)
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    # -- faults --------------------------------------------------------------

    def _call(self, fn) -> None:
        assert self._loop is not None, "relay not started"
        done = threading.Event()

        def run():
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(10)

    def kill(self) -> None:
        def do():
            self.mode = KILL
            self._abort_all()

        self._call(do)

    def blackhole(self) -> None:
        self._call(lambda: setattr(self, "mode", BLACKHOLE))

    def heal(self) -> None:
        self._call(lambda: setattr(self, "mode", PASS))

    def _abort_all(self) -> None:
        for w in list(self._writers):
            try:
                w.transport.abort()
            except Exception:
                pass
        self._writers.clear()

    # -- relaying ------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == KILL:
            writer.transport.abort()
            return
        self._writers.add(writer)
        while self.mode == BLACKHOLE:  # accepted, never answered
            await asyncio.sleep(0.05)
            if writer.is_closing():
                return
        if self.mode == KILL:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 10)
        except Exception:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.mode == BLACKHOLE:
                    continue  # dropped
                if self.mode == KILL:
                    break
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()
        finally:
            try:
                if writer.can_write_eof():
                    writer.write_eof()
            except Exception:
                pass
