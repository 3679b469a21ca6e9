"""The test fault relay itself (it must be right before it judges gateways)."""

from __future__ import annotations

import asyncio

from faultrelay import FaultRelay


async def _echo_server():
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _roundtrip(port: int, data: bytes, timeout: float = 5) -> bytes:
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        w.write(data)
        await w.drain()
        return await asyncio.wait_for(r.readexactly(len(data)), timeout)
    finally:
        w.close()


async def test_relay_forwards_kills_blackholes_and_heals():
    server, port = await _echo_server()
    try:
        async with FaultRelay(f"127.0.0.1:{port}") as relay:
            assert await _roundtrip(relay.port, b"hello") == b"hello"

            # An open connection is cut by kill(); new ones are refused.
            r, w = await asyncio.open_connection("127.0.0.1", relay.port)
            w.write(b"x")
            assert await asyncio.wait_for(r.readexactly(1), 5) == b"x"
            await asyncio.get_running_loop().run_in_executor(None, relay.kill)
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
            r2, w2 = await asyncio.open_connection("127.0.0.1", relay.port)
            assert await asyncio.wait_for(r2.read(), 5) == b""
            w2.close()

            # Black hole: connected, but nothing comes back.
            await asyncio.get_running_loop().run_in_executor(None, relay.blackhole)
            r3, w3 = await asyncio.open_connection("127.0.0.1", relay.port)
            w3.write(b"lost")
            try:
                await asyncio.wait_for(r3.read(1), 0.5)
                raise AssertionError("a black hole answered")
            except asyncio.TimeoutError:
                pass
            w3.close()

            await asyncio.get_running_loop().run_in_executor(None, relay.heal)
            assert await _roundtrip(relay.port, b"again" * 10000) == b"again" * 10000
    finally:
        server.close()
