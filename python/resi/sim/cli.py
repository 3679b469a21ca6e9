"""``resi sim``: run simulated ESI roles until SIGINT or SIGTERM.

```text
resi sim facility [--listen ADDR] [options]
resi sim exchange registry --listen 127.0.0.1:9091   # several roles on one server
```

Prints ``resi: listening on ADDR`` on stderr once serving (as ``resi
gateway`` does) and exits 0 on SIGINT/SIGTERM; 2 on bad usage, 1 if it
cannot listen. Documented in docs/python.md, "Simulator".
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from decimal import Decimal, InvalidOperation
from typing import Optional

ROLES = ("facility", "exchange", "registry")
#: The reference implementation's default ports, per role.
DEFAULT_PORTS = {"registry": 9090, "exchange": 9091, "facility": 9092}


def _price(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a decimal price such as 0.25, got {text!r}") from None


def _entry(text: str) -> tuple[str, str, str]:
    from .registry import parse_entry

    try:
        return parse_entry(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resi sim",
        description="Run simulated ESI roles (SolarNetwork dialect) on one gRPC server until SIGINT or SIGTERM.",
        epilog="Defaults to the reference ports on 127.0.0.1: registry 9090, exchange 9091, facility 9092 (the first role given).",
    )
    p.add_argument("roles", nargs="+", choices=ROLES, metavar="ROLE", help="facility, exchange and/or registry")
    p.add_argument("--listen", metavar="ADDR", help="host:port to serve on (port 0: any free port)")
    p.add_argument("--log-level", metavar="LEVEL", default=os.environ.get("RESI_LOG", "info"), help="Python log level (default: $RESI_LOG or info)")
    p.add_argument("--seed", type=int, default=0, help="seed of the power profile and prices (default 0)")
    p.add_argument("--require-registration", action="store_true", help="refuse routes of peers that did not complete a registration")
    f = p.add_argument_group("facility")
    f.add_argument("--facility-uid", default="facility-1", metavar="UID")
    f.add_argument("--accept-at", type=_price, default=Decimal("0.25"), metavar="PRICE", help="accept offers at or above this price (default 0.25)")
    f.add_argument("--reject-below", type=_price, default=Decimal("0.10"), metavar="PRICE", help="reject offers below this price; counter-offer in between (default 0.10)")
    f.add_argument("--currency", default="USD", metavar="CODE", help="the currency the facility trades in (default USD)")
    e = p.add_argument_group("exchange")
    e.add_argument("--exchange-uid", default="exchange-1", metavar="UID")
    e.add_argument("--exchange-name", default="resi simulated exchange", metavar="NAME")
    e.add_argument("--endpoint-uri", metavar="URI", help="the exchange's address as the registry lists it (default: ADDR)")
    r = p.add_argument_group("registry")
    r.add_argument("--list", dest="entries", type=_entry, action="append", default=[], metavar="NAME,UID,URI", help="an exchange the registry lists (repeatable); an exchange served here is listed too")
    return p


async def serve(args: argparse.Namespace) -> int:
    from . import Exchange, Facility, PriceFloorPolicy, Registry, serve

    roles = list(dict.fromkeys(args.roles))
    built: dict[str, object] = {}
    if "facility" in roles:
        try:
            policy = PriceFloorPolicy(accept_at=args.accept_at, reject_below=args.reject_below, currency=args.currency)
        except ValueError as e:
            print(f"resi sim: error: {e}", file=sys.stderr)
            return 2
        built["facility"] = Facility(uid=args.facility_uid, policy=policy, seed=args.seed, require_registration=args.require_registration)
    if "exchange" in roles:
        built["exchange"] = Exchange(uid=args.exchange_uid, name=args.exchange_name, endpoint_uri=args.endpoint_uri, seed=args.seed, require_registration=args.require_registration)
    if "registry" in roles:
        listed = ([built["exchange"]] if "exchange" in built else []) + list(args.entries)
        built["registry"] = Registry(exchanges=listed)
    listen = args.listen or f"127.0.0.1:{DEFAULT_PORTS[roles[0]]}"
    try:
        server = serve([built[r] for r in roles], listen=listen)  # type: ignore[misc]
    except ValueError as e:
        print(f"resi sim: error: --{e}", file=sys.stderr)
        return 2
    try:
        await server.start()
    except OSError as e:
        print(f"resi sim: error: {e}", file=sys.stderr)
        return 1
    print(f"resi: listening on {server.address}", file=sys.stderr, flush=True)
    logging.getLogger("resi.sim").info("serving %s", ", ".join(roles))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("resi.sim").info("stopping")
    await server.stop(grace=1.0)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``resi sim ARGS``; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        logging.basicConfig(level=args.log_level.upper(), format="resi sim: %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    except ValueError:
        print(f"resi sim: error: --log-level: unknown level {args.log_level!r}", file=sys.stderr)
        return 2
    return asyncio.run(serve(args))
