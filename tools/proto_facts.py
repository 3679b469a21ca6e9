#!/usr/bin/env python3
"""Dump the wire-relevant facts of a set of .proto files as JSON.

Input is a directory of ``.proto`` files (compiled with grpcio-tools'
protoc, every ``*.proto`` below it) or a serialized ``FileDescriptorSet``
(``protoc -o``).  Output lists, sorted by name:

- ``services``: every method with its full gRPC path, request and response
  type and whether each side streams;
- ``messages``: every message (nested ones too) with every field's number,
  name, type, label, type name and oneof;
- ``enums``: every enum with its values;
- ``files``: per file its package and imports, and ``descriptor``: the
  ``FileDescriptorProto`` itself without source info (names, numbers and
  options only, no comments), so two trees can be checked for descriptors
  that serialize to the same bytes.

Why it exists: resi ships its own statement of a third party's protos and
``tests/test_esi_descriptors.py`` compares them with facts recorded from the
original tree; this tool makes that record and the same walk over resi's
modules, and can rebuild message classes from the facts alone
(:func:`pool_from_facts`) for cross-encoding checks.

    python tools/proto_facts.py PROTO_DIR_OR_DESCRIPTOR_SET [--source TEXT] [-o OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format

Facts = dict[str, Any]

_FIELD_TYPES = descriptor_pb2.FieldDescriptorProto.Type
_FIELD_LABELS = descriptor_pb2.FieldDescriptorProto.Label


def compile_tree(root: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    """Compile every ``*.proto`` under ``root`` (imports resolved from it)."""
    from grpc_tools import protoc

    wkt = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        if protoc.main(["protoc", f"-I{root}", f"-I{wkt}", f"-o{out}", *files]) != 0:
            raise SystemExit(f"protoc failed on {root}")
        return read_descriptor_set(out)


def read_descriptor_set(path: Path) -> list[descriptor_pb2.FileDescriptorProto]:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return list(fds.file)


def _field_facts(field: descriptor_pb2.FieldDescriptorProto, oneofs: list[str]) -> Facts:
    real_oneof = field.HasField("oneof_index") and not field.proto3_optional
    return {
        "number": field.number,
        "name": field.name,
        "type": _FIELD_TYPES.Name(field.type),
        "label": _FIELD_LABELS.Name(field.label),
        "type_name": field.type_name,
        "oneof": oneofs[field.oneof_index] if real_oneof else None,
        "proto3_optional": field.proto3_optional,
    }


def _enum_facts(enum: descriptor_pb2.EnumDescriptorProto, full: str, file: str, parent: str | None) -> Facts:
    return {
        "name": full,
        "file": file,
        "parent": parent,
        "values": [{"name": v.name, "number": v.number} for v in enum.value],
    }


def _walk_message(
    msg: descriptor_pb2.DescriptorProto, prefix: str, file: str, parent: str | None,
    messages: list[Facts], enums: list[Facts],
) -> None:
    full = f"{prefix}.{msg.name}"
    oneofs = [o.name for o in msg.oneof_decl]
    messages.append({
        "name": full,
        "file": file,
        "parent": parent,
        "map_entry": msg.options.map_entry,
        "oneofs": oneofs,
        "fields": [_field_facts(f, oneofs) for f in msg.field],
    })
    for enum in msg.enum_type:
        enums.append(_enum_facts(enum, f"{full}.{enum.name}", file, full))
    for nested in msg.nested_type:
        _walk_message(nested, full, file, full, messages, enums)


def _service_facts(svc: descriptor_pb2.ServiceDescriptorProto, package: str, file: str) -> Facts:
    full = f"{package}.{svc.name}" if package else svc.name
    return {
        "name": full,
        "file": file,
        "methods": [
            {
                "name": m.name,
                "path": f"/{full}/{m.name}",
                "input_type": m.input_type,
                "output_type": m.output_type,
                "client_streaming": m.client_streaming,
                "server_streaming": m.server_streaming,
            }
            for m in svc.method
        ],
    }


def _strip_json_names(msg: descriptor_pb2.DescriptorProto) -> None:
    for field in msg.field:
        field.ClearField("json_name")
    for nested in msg.nested_type:
        _strip_json_names(nested)


def bare_descriptor(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """``fdp`` as generated code embeds it: no source info, no JSON names.

    protoc fills ``json_name`` in descriptor sets but strips it (and the
    comments) from the copy it embeds in generated modules; JSON names are
    derived from field names anyway, so they carry no fact of their own.
    """
    bare = descriptor_pb2.FileDescriptorProto()
    bare.CopyFrom(fdp)
    bare.ClearField("source_code_info")
    for msg in bare.message_type:
        _strip_json_names(msg)
    return bare


def facts(files: Iterable[descriptor_pb2.FileDescriptorProto], source: str = "") -> Facts:
    """The facts of ``files`` (each as protoc would hand it to a plugin)."""
    out: Facts = {"source": source, "files": [], "services": [], "messages": [], "enums": []}
    for fdp in sorted(files, key=lambda f: f.name):
        prefix = f".{fdp.package}" if fdp.package else ""
        bare = bare_descriptor(fdp)
        out["files"].append({
            "name": fdp.name,
            "package": fdp.package,
            "syntax": fdp.syntax,
            "dependencies": list(fdp.dependency),
            "descriptor": json_format.MessageToDict(bare, preserving_proto_field_name=True),
        })
        for msg in fdp.message_type:
            _walk_message(msg, prefix, fdp.name, None, out["messages"], out["enums"])
        for enum in fdp.enum_type:
            out["enums"].append(_enum_facts(enum, f"{prefix}.{enum.name}", fdp.name, None))
        for svc in fdp.service:
            out["services"].append(_service_facts(svc, fdp.package, fdp.name))
    for key in ("services", "messages", "enums"):
        out[key].sort(key=lambda item: item["name"])
    return out


def files_from_pool(pool: descriptor_pool.DescriptorPool, names: Iterable[str]) -> list[descriptor_pb2.FileDescriptorProto]:
    """``FileDescriptorProto``s of already loaded files (e.g. generated modules)."""
    result = []
    for name in names:
        fdp = descriptor_pb2.FileDescriptorProto()
        pool.FindFileByName(name).CopyToProto(fdp)
        result.append(fdp)
    return result


def _fill_message(msg: descriptor_pb2.DescriptorProto, item: Facts) -> None:
    msg.name = item["name"].rsplit(".", 1)[1]
    if item["map_entry"]:
        msg.options.map_entry = True
    for oneof in item["oneofs"]:
        msg.oneof_decl.add(name=oneof)
    for f in item["fields"]:
        field = msg.field.add(
            name=f["name"], number=f["number"],
            type=_FIELD_TYPES.Value(f["type"]), label=_FIELD_LABELS.Value(f["label"]),
            proto3_optional=f["proto3_optional"],
        )
        if f["type_name"]:
            field.type_name = f["type_name"]
        if f["oneof"] is not None:
            field.oneof_index = item["oneofs"].index(f["oneof"])


def _fill_enum(enum: descriptor_pb2.EnumDescriptorProto, item: Facts) -> None:
    enum.name = item["name"].rsplit(".", 1)[1]
    for v in item["values"]:
        enum.value.add(name=v["name"], number=v["number"])


def files_from_facts(f: Facts) -> list[descriptor_pb2.FileDescriptorProto]:
    """Rebuild ``FileDescriptorProto``s from the structured facts only.

    Uses files/services/messages/enums, never the ``descriptor`` copies, so
    a pool built from it shows whether the facts alone describe the wire.
    Options are left out: they do not change the encoding.
    """
    built: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for item in f["files"]:
        built[item["name"]] = descriptor_pb2.FileDescriptorProto(
            name=item["name"], package=item["package"], syntax=item["syntax"],
            dependency=item["dependencies"],
        )
    protos: dict[str, Any] = {}
    for item in sorted(f["messages"], key=lambda m: m["name"].count(".")):
        owner = protos[item["parent"]].nested_type if item["parent"] else built[item["file"]].message_type
        protos[item["name"]] = owner.add()
        _fill_message(protos[item["name"]], item)
    for item in f["enums"]:
        owner = protos[item["parent"]].enum_type if item["parent"] else built[item["file"]].enum_type
        _fill_enum(owner.add(), item)
    for item in f["services"]:
        svc = built[item["file"]].service.add(name=item["name"].rsplit(".", 1)[1])
        for m in item["methods"]:
            svc.method.add(
                name=m["name"], input_type=m["input_type"], output_type=m["output_type"],
                client_streaming=m["client_streaming"], server_streaming=m["server_streaming"],
            )
    return list(built.values())


def pool_from_facts(f: Facts, extra: Iterable[descriptor_pb2.FileDescriptorProto] = ()) -> descriptor_pool.DescriptorPool:
    """A fresh pool holding ``extra`` (e.g. well-known types) and the facts' files."""
    pool = descriptor_pool.DescriptorPool()
    pending = {fdp.name: fdp for fdp in [*extra, *files_from_facts(f)]}
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        for dep in pending[name].dependency:
            add(dep)
        pool.Add(pending[name])
        added.add(name)

    for name in pending:
        add(name)
    return pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="directory of .proto files, or a FileDescriptorSet")
    parser.add_argument("--source", default="", help="where the input came from (recorded as is)")
    parser.add_argument("--prefix", default="", help="keep only files whose name starts with this")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    files = compile_tree(args.input) if args.input.is_dir() else read_descriptor_set(args.input)
    text = json.dumps(
        facts((f for f in files if f.name.startswith(args.prefix)), args.source),
        indent=1, sort_keys=True,
    ) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
