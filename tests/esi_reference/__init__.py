"""Facts recorded from third-party proto trees, and helpers to use them in tests.

``solarnetwork-d589174.json`` is the output of ``tools/proto_facts.py`` run on
``api/src/main/proto`` of SolarNetwork/der-challenge-prototype at commit
d589174 (names, numbers, types and options; no comments or other text)::

    python tools/proto_facts.py CHECKOUT/api/src/main/proto \
        --source "SolarNetwork/der-challenge-prototype d589174 api/src/main/proto" \
        -o tests/esi_reference/solarnetwork-d589174.json
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf import descriptor_pb2, json_format

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOLARNETWORK = HERE / "solarnetwork-d589174.json"


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def reference() -> dict[str, Any]:
    return json.loads(SOLARNETWORK.read_text())  # type: ignore[no-any-return]


def reference_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The recorded FileDescriptorProtos of SolarNetwork's files, plus the WKTs they import."""
    from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    for wkt in (duration_pb2, empty_pb2, timestamp_pb2):
        wkt.DESCRIPTOR.CopyToProto(fds.file.add())
    for item in reference()["files"]:
        json_format.ParseDict(item["descriptor"], fds.file.add())
    return fds


def generate_reference_modules(out: Path) -> None:
    """Generate ``solarnetwork.*_pb2`` / ``*_pb2_grpc`` modules from the recorded descriptors.

    This is what a user who ran protoc on SolarNetwork's own files has (the
    same descriptors, top-level ``solarnetwork`` package), without their files.
    """
    out.mkdir(parents=True, exist_ok=True)
    descriptor_set = out / "reference.pb"
    descriptor_set.write_bytes(reference_descriptor_set().SerializeToString())
    names = [item["name"] for item in reference()["files"]]
    run = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"--descriptor_set_in={descriptor_set}",
         f"--python_out={out}", f"--grpc_python_out={out}", *names],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
