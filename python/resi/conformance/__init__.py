"""``resi conformance``: a conformance suite for RESI implementations.

It plays the other side of the protocol on the wire, from
docs/protocol.md alone: a scripted client gateway against an end gateway
under test (``--role end-gateway``), or a scripted end gateway with its
own ESI server in front of a client gateway under test (``--role
client-gateway``). Each check names the requirement (``R-<section>-<n>``)
of docs/protocol.md it tests. docs/conformance.md says how to run it.

```text
resi conformance --target HOST:PORT --role end-gateway|client-gateway
                 [--mode strict|permissive] [--listen HOST:PORT]... [--json]
                 [--only R-ID]...
```

Exit status: 0 if every check passed, 1 if any failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Optional

from . import wire
from .report import CheckFailed, Report, Result

#: The longest one check may take before it counts as failed.
CHECK_TIMEOUT = 20.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resi conformance",
        description="Check a RESI gateway against docs/protocol.md by playing the other side on the wire.",
    )
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="end gateway: its listen address; client gateway: its ESI listen address")
    p.add_argument("--role", required=True, choices=("end-gateway", "client-gateway"), help="what the target is")
    p.add_argument("--mode", choices=("strict", "permissive"), default="strict", help="the target's configured mode (default strict)")
    p.add_argument("--listen", action="append", metavar="HOST:PORT", help="client-gateway role: where the suite's end gateway listens, one per path (default 127.0.0.1:50551 and 127.0.0.1:50552); the target's upstream [Tcp] Address must list these")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--only", action="append", metavar="R-ID", help="run only these requirements")
    return p


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


async def _run_checks(checks, only: Optional[list[str]], report: Report, make, stop) -> None:
    for req, title, method, modes in checks:
        if only and req not in only:
            continue
        if modes is not None and report.mode_code not in modes:
            continue
        subject = make()
        t0 = time.monotonic()
        try:
            seen = await asyncio.wait_for(getattr(subject, method)(), CHECK_TIMEOUT)
            passed = True
        except CheckFailed as e:
            seen, passed = str(e), False
        except asyncio.TimeoutError:
            seen, passed = f"no outcome within {CHECK_TIMEOUT:.0f} s", False
        except Exception as e:  # the peer did something the suite cannot parse
            seen, passed = f"{type(e).__name__}: {e}", False
        finally:
            await stop(subject)
        report.results.append(Result(req, title, passed, seen, round(time.monotonic() - t0, 2)))


async def run(target: str, role: str, mode: str = "strict", listen: Optional[list[str]] = None, only: Optional[list[str]] = None) -> Report:
    """Runs the suite against `target` and returns the report."""
    host, port = _addr(target)
    code = wire.STRICT if mode == "strict" else wire.PERMISSIVE
    report = Report(target, role, mode)
    report.mode_code = code  # type: ignore[attr-defined]
    if role == "end-gateway":
        from .end_gateway import CHECKS, EndGatewayChecks

        await _run_checks(CHECKS, only, report, lambda: EndGatewayChecks(host, port, code), lambda s: s.stop())
    else:
        from .client_gateway import CHECKS, Acceptor

        addrs = [_addr(a) for a in (listen or ["127.0.0.1:50551", "127.0.0.1:50552"])]
        acceptor = Acceptor(addrs, (host, port), code)
        await acceptor.start()
        try:
            await _run_checks(CHECKS, only, report, lambda: acceptor, lambda s: s.reset())
        finally:
            await acceptor.close()
    return report


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        _addr(args.target)
        for a in args.listen or []:
            _addr(a)
    except ValueError as e:
        print(f"resi conformance: error: {e}", file=sys.stderr)
        return 2
    report = asyncio.run(run(args.target, args.role, args.mode, args.listen, args.only))
    print(report.json() if args.json else report.table())
    return 1 if report.failed or not report.results else 0
