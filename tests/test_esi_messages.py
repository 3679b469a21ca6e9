"""The ESI message classes shipped in resi.esi: current, complete, on the wire.

- the committed gencode equals a fresh run of tools/gen_esi_python.py;
- resi.esi exports every message and enum of solarnetwork.esi.domain;
- the wire vectors of docs (esi-protocol §8) encode as stated.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

import resi.esi as esi
from resi.esi._proto.solarnetwork.esi.domain import der_route_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_committed_modules_are_current() -> None:
    gen = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_esi_python.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )
    assert gen.returncode == 0, gen.stderr


def test_every_domain_type_is_exported_flat() -> None:
    package = der_route_pb2.DESCRIPTOR.package
    pool = der_route_pb2.DESCRIPTOR.pool
    domain_files = [
        pool.FindFileByName(f"solarnetwork/esi/domain/{p.stem}.proto")
        for p in (ROOT / "proto" / "solarnetwork" / "esi" / "domain").glob("*.proto")
    ]
    names = {n for f in domain_files for n in [*f.message_types_by_name, *f.enum_types_by_name]}
    assert len(names) == 43  # 40 messages, 3 top-level enums
    for name in names:
        exported = getattr(esi, name)
        assert name in esi.__all__
        full = getattr(exported, "DESCRIPTOR").full_name
        assert full == f"{package}.{name}"


@pytest.mark.parametrize(
    ("message", "hex_bytes"),
    [
        (esi.DatumRequest(time_concept=esi.TimeConcept.Value("MOST_RECENT")), "1800"),
        (esi.PriceMapOfferResponse(accept=False), "1800"),
        (esi.PriceMapOfferResponse(accept=True), "1801"),
        (esi.Uuid(hi=1, lo=2), "090100000000000000110200000000000000"),
        (esi.DurationRange(min=Duration(seconds=1), max=Duration(seconds=2)), "320208013a020802"),
        (esi.SignedInt32Range(min=-1, max=1), "08011002"),
        (esi.DerRoute(exchange_uid="a", facility_uid="b"), "0a0161120162"),
    ],
)
def test_wire_vectors(message: object, hex_bytes: str) -> None:
    encoded = message.SerializeToString()  # type: ignore[attr-defined]
    assert encoded.hex() == hex_bytes
    assert type(message).FromString(encoded) == message  # type: ignore[attr-defined]
