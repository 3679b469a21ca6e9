"""The benchmark command's Python part (``tools/bench_clients.py``) in a
second, so it cannot rot: one short round of resi.Client, resi.aio.Channel
and grpc.aio against a grpc.aio echo server on 127.0.0.1, every reply
checked, and the table it prints. (The Rust part: tests/bench_smoke.rs.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from grpc import aio

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def bench_clients() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_clients", TOOLS / "bench_clients.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_clients"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


async def echo_server(answer: bytes | None = None) -> tuple[aio.Server, str]:
    """``resitest.Echo/Unary`` answering the request (or ``answer``)."""
    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, _: request if answer is None else answer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("resitest.Echo", {"Unary": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_one_round_of_every_client() -> None:
    bench = bench_clients()
    server, target = await echo_server()
    lines: list[str] = []
    try:
        results = await bench.run(target, rounds=2, secs=0.1, out=lines.append)
    finally:
        await server.stop(None)
    assert list(results.rounds) == ["resi.Client", "resi.aio.Channel", "grpc.aio"]
    for name, figures in results.rounds.items():
        assert len(figures) == 2, name
        for f in figures:
            assert 0 < f.p50_us <= f.p99_us and f.c1_per_s > 0 and f.c64_per_s > 0, (name, f)
    assert len(lines) == 6 and all("c64" in line for line in lines)
    table = bench.table(results).splitlines()
    assert table[0].startswith("| client | c1 p50 µs |") and len(table) == 5
    assert table[4].startswith("| grpc.aio |") and table[4].endswith("| 1.00× | 1.00× |")
    assert "×" in table[2].split("|")[6]


async def test_a_wrong_reply_fails_the_run() -> None:
    bench = bench_clients()
    server, target = await echo_server(answer=b"\x0a\x01x")
    try:
        with pytest.raises(bench.WrongReply):
            await bench.run(target, rounds=1, secs=0.1, out=lambda _: None)
    finally:
        await server.stop(None)
