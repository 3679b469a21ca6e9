"""resi's ESI protos against the facts recorded from SolarNetwork's files.

Everything is derived from the descriptors, never from a hand-kept list:

- our shipped modules' descriptors give the same facts (every gRPC path,
  request/response type, streaming flag; every field's number, name, type,
  label, type name and oneof; every enum value) and the same
  FileDescriptorProtos, byte for byte, as SolarNetwork's tree at d589174;
- message classes rebuilt from the facts alone, in a separate descriptor
  pool ("theirs"), exchange every request and response message of every
  RPC with ours, fully populated (nested, repeated, maps, each oneof
  member), byte for byte in both directions;
- modules a user generated from SolarNetwork's descriptors load beside
  resi.esi and share its classes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, json_format, message, message_factory
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2, unknown_fields

import esi_reference
import resi.esi
from resi.esi._proto.solarnetwork.esi.service import (
    der_facility_exchange_pb2,
    der_facility_exchange_registry_pb2,
    der_facility_service_pb2,
)

facts_tool = esi_reference.load_tool("proto_facts")
REF = esi_reference.reference()
SHIPPED = (der_facility_exchange_pb2, der_facility_exchange_registry_pb2, der_facility_service_pb2)
OURS_POOL = der_facility_service_pb2.DESCRIPTOR.pool
OURS = facts_tool.facts(
    facts_tool.files_from_pool(OURS_POOL, [f["name"] for f in REF["files"]]), REF["source"],
)
WKT = [facts_tool.files_from_pool(descriptor_pool.Default(), [m.DESCRIPTOR.name])[0]
       for m in (duration_pb2, empty_pb2, timestamp_pb2)]
THEIRS_POOL = facts_tool.pool_from_facts(REF, WKT)
METHODS = [(svc["name"], m) for svc in REF["services"] for m in svc["methods"]]
#: Every oneof in the reference has this many members at most: one variant each.
VARIANTS = max((sum(1 for f in m["fields"] if f["oneof"] == o) for m in REF["messages"] for o in m["oneofs"]), default=1)


def by_name(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["name"]: item for item in items}


# --- facts ----------------------------------------------------------------


def test_reference_is_the_esi_layout() -> None:
    shapes = {(m["client_streaming"], m["server_streaming"]) for _, m in METHODS}
    assert len(REF["services"]) == 3 and len(METHODS) == 18
    assert shapes == {(False, False), (True, False), (False, True), (True, True)}
    assert sum(1 for m in REF["messages"] if not m["map_entry"]) == 40
    assert len(REF["enums"]) == 6


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[m["path"] for _, m in METHODS])
def test_method_matches(service: str, method: dict[str, Any]) -> None:
    ours = by_name(by_name(OURS["services"])[service]["methods"])[method["name"]]
    assert ours == method
    # ...and the shipped gRPC stub module calls exactly that path.
    module = {m.DESCRIPTOR.name: m for m in SHIPPED}[by_name(REF["services"])[service]["file"]]
    desc = module.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[1]].methods_by_name[method["name"]]
    assert f"/{desc.containing_service.full_name}/{desc.name}" == method["path"]


def test_services_match() -> None:
    assert OURS["services"] == REF["services"]


@pytest.mark.parametrize("name", sorted(by_name(REF["messages"])))
def test_message_matches(name: str) -> None:
    assert by_name(OURS["messages"]).get(name) == by_name(REF["messages"])[name]


def test_messages_and_enums_match() -> None:
    assert OURS["messages"] == REF["messages"]
    assert OURS["enums"] == REF["enums"]


def test_same_files_no_more() -> None:
    """Our proto tree and the shipped modules hold exactly the reference's files."""
    proto_root = esi_reference.ROOT / "proto"
    ours = {str(p.relative_to(proto_root)) for p in (proto_root / "solarnetwork").rglob("*.proto")}
    shipped_root = Path(resi.esi.__file__).parent / "_proto"
    shipped = {str(p.relative_to(shipped_root)).replace("_pb2.py", ".proto") for p in shipped_root.rglob("*_pb2.py")}
    assert ours == shipped == {f["name"] for f in REF["files"]}


@pytest.mark.parametrize("name", [f["name"] for f in REF["files"]])
def test_file_descriptor_is_identical(name: str) -> None:
    """Same FileDescriptorProto as SolarNetwork's file, so the bytes protoc embeds are equal."""
    ref = by_name(REF["files"])[name]
    ours = by_name(OURS["files"])[name]
    assert ours == ref
    fdp = facts_tool.bare_descriptor(facts_tool.files_from_pool(OURS_POOL, [name])[0])
    theirs = json_format.ParseDict(ref["descriptor"], descriptor_pb2.FileDescriptorProto())
    assert fdp.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


# --- cross-encoding ---------------------------------------------------------

_SCALARS: dict[int, Any] = {
    descriptor.FieldDescriptor.TYPE_INT32: lambda n: -3 * n,
    descriptor.FieldDescriptor.TYPE_SINT32: lambda n: -5 * n - 1,
    descriptor.FieldDescriptor.TYPE_SFIXED32: lambda n: -7 * n,
    descriptor.FieldDescriptor.TYPE_INT64: lambda n: -(2**40) - n,
    descriptor.FieldDescriptor.TYPE_SINT64: lambda n: -(2**41) - n,
    descriptor.FieldDescriptor.TYPE_SFIXED64: lambda n: -(2**42) - n,
    descriptor.FieldDescriptor.TYPE_UINT32: lambda n: 2**31 + n,
    descriptor.FieldDescriptor.TYPE_FIXED32: lambda n: 2**32 - n,
    descriptor.FieldDescriptor.TYPE_UINT64: lambda n: 2**63 + n,
    descriptor.FieldDescriptor.TYPE_FIXED64: lambda n: 2**64 - n,
    descriptor.FieldDescriptor.TYPE_FLOAT: lambda n: 1.5 + n,
    descriptor.FieldDescriptor.TYPE_DOUBLE: lambda n: -2.25 - n,
    descriptor.FieldDescriptor.TYPE_BOOL: lambda n: True,
    descriptor.FieldDescriptor.TYPE_STRING: lambda n: f"s{n}-\u00e9\u26a1",
    descriptor.FieldDescriptor.TYPE_BYTES: lambda n: bytes([0, 255, n]),
}


def scalar(field: descriptor.FieldDescriptor, salt: int) -> Any:
    if field.type == descriptor.FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number  # a non-default value
    return _SCALARS[field.type](field.number + salt)


def populate(msg: message.Message, variant: int, depth: int = 0) -> message.Message:
    """Set every field of ``msg`` (one member per oneof, chosen by ``variant``)."""
    desc = msg.DESCRIPTOR
    chosen = {o.name: o.fields[variant % len(o.fields)].name for o in desc.oneofs}
    for field in desc.fields:
        oneof = field.containing_oneof
        if oneof is not None and chosen[oneof.name] != field.name:
            continue
        if depth > 8 and field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            for salt in (1, 2):
                key = scalar(key_f, salt)
                if val_f.message_type is not None:
                    populate(value[key], variant, depth + 1)
                else:
                    value[key] = scalar(val_f, salt)
        elif field.is_repeated:
            for salt in (1, 2):
                if field.message_type is not None:
                    populate(value.add(), variant + salt, depth + 1)
                else:
                    value.append(scalar(field, salt))
        elif field.message_type is not None:
            populate(value, variant, depth + 1)
        else:
            setattr(msg, field.name, scalar(field, 0))
    return msg


def message_class(pool: descriptor_pool.DescriptorPool, type_name: str) -> type[message.Message]:
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name.lstrip(".")))


def as_tree(msg: message.Message) -> dict[str, Any]:
    """Field name -> value, recursively; fails on any unknown field."""
    assert len(unknown_fields.UnknownFieldSet(msg)) == 0, msg.DESCRIPTOR.full_name

    def value(field: descriptor.FieldDescriptor, v: Any) -> Any:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            val_f = field.message_type.fields_by_name["value"]
            return {k: value(val_f, x) for k, x in v.items()}
        if field.is_repeated:
            return [value_one(field, x) for x in v]
        return value_one(field, v)

    def value_one(field: descriptor.FieldDescriptor, v: Any) -> Any:
        return as_tree(v) if isinstance(v, message.Message) else v

    return {f.name: value(f, v) for f, v in msg.ListFields()}


def exchange(src: type[message.Message], dst: type[message.Message], variant: int) -> None:
    sent = populate(src(), variant)
    data = sent.SerializeToString(deterministic=True)
    assert data or not sent.DESCRIPTOR.fields
    got = dst.FromString(data)
    # Same fields by name with the same values: nothing became an unknown field.
    assert as_tree(got) == as_tree(sent)
    for oneof in sent.DESCRIPTOR.oneofs:
        assert got.WhichOneof(oneof.name) == sent.WhichOneof(oneof.name)
    assert got.SerializeToString(deterministic=True) == data


RPC_MESSAGES = [
    (f"{m['path']}:{side}", m[f"{side}_type"])
    for _, m in METHODS for side in ("input", "output")
]


@pytest.mark.parametrize(("rpc", "type_name"), RPC_MESSAGES, ids=[r for r, _ in RPC_MESSAGES])
@pytest.mark.parametrize("variant", range(VARIANTS))
def test_rpc_message_crosses_byte_for_byte(rpc: str, type_name: str, variant: int) -> None:
    ours = message_class(OURS_POOL, type_name)
    theirs = message_class(THEIRS_POOL, type_name)
    assert ours is not theirs and ours.DESCRIPTOR.file.pool is not theirs.DESCRIPTOR.file.pool
    exchange(ours, theirs, variant)
    exchange(theirs, ours, variant)


@pytest.mark.parametrize("name", [m["name"] for m in REF["messages"] for o in m["oneofs"]])
def test_oneof_member_at_default_value_is_sent(name: str) -> None:
    """An explicitly set oneof scalar at its zero value (accept = false) survives."""
    ours, theirs = message_class(OURS_POOL, name), message_class(THEIRS_POOL, name)
    for oneof in ours.DESCRIPTOR.oneofs:
        for field in oneof.fields:
            if field.message_type is None:
                msg = ours(**{field.name: field.default_value})
                got = theirs.FromString(msg.SerializeToString())
                assert got.WhichOneof(oneof.name) == field.name
                assert got.SerializeToString() == msg.SerializeToString()


VECTORS = [  # docs: esi-protocol §8, decoded by their classes
    ("solarnetwork.esi.domain.DatumRequest", "1800", {"time_concept": 0}),
    ("solarnetwork.esi.domain.PriceMapOfferResponse", "1800", {"accept": False}),
    ("solarnetwork.esi.domain.PriceMapOfferResponse", "1801", {"accept": True}),
    ("solarnetwork.esi.domain.Uuid", "090100000000000000110200000000000000", {"hi": 1, "lo": 2}),
    ("solarnetwork.esi.domain.SignedInt32Range", "08011002", {"min": -1, "max": 1}),
    ("solarnetwork.esi.domain.DerRoute", "0a0161120162", {"exchange_uid": "a", "facility_uid": "b"}),
]


@pytest.mark.parametrize(("type_name", "hex_bytes", "fields"), VECTORS)
def test_wire_vectors_both_sides(type_name: str, hex_bytes: str, fields: dict[str, Any]) -> None:
    for pool in (OURS_POOL, THEIRS_POOL):
        cls = message_class(pool, type_name)
        assert cls(**fields).SerializeToString().hex() == hex_bytes
        decoded = cls.FromString(bytes.fromhex(hex_bytes))
        for key, value in fields.items():
            assert getattr(decoded, key) == value
            if cls.DESCRIPTOR.fields_by_name[key].containing_oneof is not None:
                assert decoded.HasField(key)


def test_duration_range_vector_both_sides() -> None:
    for pool in (OURS_POOL, THEIRS_POOL):
        cls = message_class(pool, "solarnetwork.esi.domain.DurationRange")
        msg = cls()
        getattr(msg, "min").seconds = 1
        getattr(msg, "max").seconds = 2
        assert msg.SerializeToString().hex() == "320208013a020802"


# --- coexistence ----------------------------------------------------------

COEXIST = """
import sys
sys.path.insert(0, sys.argv[1])
first, second = sys.argv[2:4]
import importlib
a = importlib.import_module(first)
b = importlib.import_module(second)
import resi.esi
from solarnetwork.esi.domain import price_map_offer_pb2, der_route_pb2
from solarnetwork.esi.service import der_facility_service_pb2_grpc
assert price_map_offer_pb2.PriceMapOffer is resi.esi.PriceMapOffer
offer = price_map_offer_pb2.PriceMapOffer(route=resi.esi.DerRoute(exchange_uid="x"))
assert resi.esi.PriceMapOffer.FromString(offer.SerializeToString()) == offer
print("ok")
"""


@pytest.mark.parametrize("order", [("resi.esi", "solarnetwork.esi.domain.der_route_pb2"),
                                   ("solarnetwork.esi.domain.der_route_pb2", "resi.esi")])
def test_user_generated_modules_coexist(tmp_path: Path, order: tuple[str, str]) -> None:
    esi_reference.generate_reference_modules(tmp_path)
    run = subprocess.run([sys.executable, "-c", COEXIST, str(tmp_path), *order],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"
