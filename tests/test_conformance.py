"""resi passes its own conformance suite (``resi conformance``), against
its own gateways in both roles and both modes, and the suite catches a
deliberately broken end gateway (tests/broken_peer.py).

The suite runs as the installed ``resi conformance`` command (the
documented contract), against real ``resi gateway`` processes on
127.0.0.1; each run is bounded (the suite bounds every check; the
subprocess has a timeout).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from broken_peer import BrokenEndGateway
from conftest import run_resi
from resi.conformance import run as run_suite

#: Every requirement the suite checks in each role (both modes together).
END_GATEWAY_REQUIREMENTS = {
    "R-2-2", "R-3.1-1", "R-3.1-2", "R-3.1-4", "R-3.1-6", "R-3.1-9", "R-3.2-1", "R-3.2-3", "R-3.2-4", "R-3.2-5",
    "R-3.3-1", "R-3.3-2", "R-3.3-3", "R-3.3-5", "R-5.1-1", "R-5.3-1", "R-5.2-2", "R-5.2-3", "R-5.2-4",
    "R-5.2-5", "R-5.5-1", "R-5.5-2", "R-5.6-1", "R-5.6-2", "R-6-2", "R-6-6", "R-7-3", "R-7-5",
    "R-7-6", "R-6-5", "R-8.1-1", "R-8.1-2", "R-8.1-3", "R-8.3-3", "R-8.4-1",
}
CLIENT_GATEWAY_REQUIREMENTS = {
    "R-4-1", "R-3.3-9", "R-2-5", "R-5.5-2", "R-8.1-1", "R-5.5-1", "R-5.2-3", "R-5.2-4",
    "R-8.1-2", "R-8.3-2", "R-8.3-1", "R-5.6-2", "R-3.1-8",
}
ROOT = Path(__file__).resolve().parent.parent
#: Checks that need a 2 s cookie lifetime at the end gateway (R-3.2-5).
END_EXTRA = 'CookieTtl = "2s"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def conformance(*args: str) -> tuple[int, dict]:
    proc = run_resi("conformance", *args, "--json", timeout=120)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def failures(report: dict) -> list[str]:
    return [f"{r['requirement']} {r['title']}: {r['seen']}" for r in report["results"] if not r["passed"]]


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_resi_end_gateway_passes_the_suite(resi, mode):
    gw = resi.gateway(listen="127.0.0.1:0", address="127.0.0.1:1", mode=mode, name="end", extra=END_EXTRA)
    target = gw.addrs[0]
    code, report = conformance("--target", target, "--role", "end-gateway", "--mode", mode)
    assert code == 0 and report["failed"] == 0, failures(report)
    seen = {r["requirement"] for r in report["results"]}
    assert END_GATEWAY_REQUIREMENTS <= seen
    assert ("R-7-2" in seen) == (mode == "permissive")


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_resi_client_gateway_passes_the_suite(resi, mode):
    suite = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    gw = resi.gateway(listen="127.0.0.1:0", address=suite, mode=mode, name="client")
    listen = [a for s in suite for a in ("--listen", s)]
    code, report = conformance("--target", gw.addrs[0], "--role", "client-gateway", "--mode", mode, *listen)
    assert code == 0 and report["failed"] == 0, failures(report)
    seen = {r["requirement"] for r in report["results"]}
    assert CLIENT_GATEWAY_REQUIREMENTS <= seen
    assert ("R-7-5" in seen) == ("R-3.1-3" in seen) == (mode == "strict")
    # resi names itself in every Open ([Resi] Name), not anonymously.
    identity = next(r["seen"] for r in report["results"] if r["requirement"] == "R-3.1-8")
    assert identity.startswith("dialler 'client' and one 16-byte instance"), identity


async def _against_broken(target: str, fault: str, only: list[str]):
    broken = BrokenEndGateway(target, fault)
    addr = await broken.start()
    try:
        return broken, await run_suite(addr, "end-gateway", only=only)
    finally:
        await broken.close()


def test_the_suite_catches_an_end_gateway_that_skips_acknowledgements(resi):
    gw = resi.gateway(listen="127.0.0.1:0", address="127.0.0.1:1", name="end")
    broken, report = asyncio.run(_against_broken(gw.addrs[0], "skip_acks", ["R-5.5-1", "R-7-3", "R-5.5-2"]))
    assert broken.dropped_acks > 0
    verdict = {r.requirement: r.passed for r in report.results}
    assert verdict == {"R-5.5-1": False, "R-7-3": False, "R-5.5-2": True}, report.table()
    assert "ACK" in next(r.seen for r in report.results if r.requirement == "R-5.5-1")


def test_the_suite_catches_an_end_gateway_that_accepts_a_reused_cookie(resi):
    gw = resi.gateway(listen="127.0.0.1:0", address="127.0.0.1:1", name="end")
    broken, report = asyncio.run(_against_broken(gw.addrs[0], "reuse_cookie", ["R-3.2-4", "R-3.2-3"]))
    assert broken.accepted_reuses == 1
    verdict = {(r.requirement, r.title): r.passed for r in report.results}
    reused = [r for r in report.results if r.requirement == "R-3.2-4"]
    assert len(reused) == 1 and not reused[0].passed, report.table()
    assert all(r.passed for r in report.results if r.requirement == "R-3.2-3"), verdict


def test_the_suite_catches_an_end_gateway_that_keeps_a_restarted_dialler_s_session(resi):
    gw = resi.gateway(listen="127.0.0.1:0", address="127.0.0.1:1", name="end")
    broken, report = asyncio.run(_against_broken(gw.addrs[0], "forget_dialler", ["R-3.1-9", "R-3.1-6"]))
    assert broken.forgotten_diallers == 3
    verdict = {r.requirement: r.passed for r in report.results}
    assert verdict == {"R-3.1-9": False, "R-3.1-6": True}, report.table()
    assert "still takes a merge" in next(r.seen for r in report.results if r.requirement == "R-3.1-9")


async def _dialler_changing_instance(suite: str) -> None:
    """A broken client gateway: two Opens of one run, each with an instance
    of its own (R-3.1-8 wants the same one), sent as discovery probes."""
    from resi.conformance import wire

    for _ in range(2):
        instance = os.urandom(16)
        req = wire.resi_pb2.OpenRequest(version=1, mode=wire.PERMISSIVE, cookies=1, dialler="broken", instance=instance)
        for _ in range(100):
            try:
                async with grpc.aio.insecure_channel(suite) as ch:
                    await ch.unary_unary("/esi.Esi/Modify")(wire.modify(wire.resi_pb2.Redundancy(open=req)), timeout=2)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)  # the suite is not listening yet


def test_the_suite_catches_a_client_gateway_that_changes_its_instance():
    suite = f"127.0.0.1:{free_port()}"

    async def both():
        dialler = asyncio.ensure_future(_dialler_changing_instance(suite))
        report = await run_suite("127.0.0.1:1", "client-gateway", "permissive", [suite], only=["R-3.1-8"])
        await dialler
        return report

    report = asyncio.run(both())
    verdict = {r.requirement: r.passed for r in report.results}
    assert verdict == {"R-3.1-8": False}, report.table()
    assert "2 instances in 2 Opens" in report.results[0].seen, report.table()


def test_a_failing_run_exits_non_zero_with_a_table(resi):
    # Nothing listens there: every check fails, the table says so.
    port = free_port()
    proc = run_resi("conformance", "--target", f"127.0.0.1:{port}", "--role", "end-gateway", "--only", "R-5.5-2", timeout=60)
    assert proc.returncode == 1
    assert "R-5.5-2" in proc.stdout and "FAIL" in proc.stdout and "0 passed, 1 failed" in proc.stdout


def test_bad_usage_exits_2():
    proc = run_resi("conformance", "--target", "nowhere", "--role", "end-gateway", timeout=30)
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr


def test_the_suite_s_protobuf_modules_are_current(tmp_path):
    # The command in python/resi/conformance/_proto/__init__.py, with the
    # pinned grpcio-tools of the test extra.
    gen = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
         str(ROOT / "proto" / "esi.proto"), str(ROOT / "proto" / "resi.proto")],
        capture_output=True, text=True, timeout=60,
    )
    assert gen.returncode == 0, gen.stderr
    committed = ROOT / "python" / "resi" / "conformance" / "_proto"
    for name in ("esi_pb2.py", "resi_pb2.py"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), f"{name} is stale: regenerate it"
