#!/usr/bin/env python3
"""Generate the Python modules of the ESI protos shipped in the wheel.

Runs protoc from grpcio-tools over ``proto/solarnetwork/esi/**.proto`` with
the ``python``, ``grpc_python`` (service files only) and mypy-protobuf
(``mypy``, ``mypy_grpc``) generators, then makes the imports
package-relative so the modules live under ``resi.esi._proto`` instead of a
top-level ``solarnetwork`` package.  The descriptors themselves are not
touched: they keep the file names ``solarnetwork/esi/...``, so modules a
user generated from SolarNetwork's own files share one descriptor pool with
ours.

Why generated files are committed: the wheel must not need protoc at build
time, and a diff of gencode in review shows what a proto edit changed.
``tests/test_esi_messages.py`` runs ``--check`` so they cannot go stale.

    python tools/gen_esi_python.py           # rewrite python/resi/esi/_proto
    python tools/gen_esi_python.py --check   # exit 1 if that tree is stale
    python tools/gen_esi_python.py --out DIR # write somewhere else
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
DEFAULT_OUT = ROOT / "python" / "resi" / "esi" / "_proto"
#: Where the generated modules are imported from (the rewrite target).
PACKAGE = "resi.esi._proto"
#: Sub-packages of the ESI protos (``solarnetwork/esi/<sub>/*.proto``).
SUBPACKAGES = ("domain", "service")

INIT_DOCS = {
    "": "Generated protobuf modules of the SolarNetwork ESI dialect (see tools/gen_esi_python.py).",
    "solarnetwork": "Generated: mirrors the proto package solarnetwork.",
    "solarnetwork/esi": "Generated: mirrors the proto package solarnetwork.esi.",
    "solarnetwork/esi/domain": "Generated: messages and enums of solarnetwork.esi.domain.",
    "solarnetwork/esi/service": "Generated: services of solarnetwork.esi.service.",
}

_FROM_IMPORT = re.compile(r"^from solarnetwork\.esi\.(\w+) import ", re.MULTILINE)
_MODULE_NAME = re.compile(r"'solarnetwork\.esi\.(\w+)\.(\w+_pb2)'")


def proto_files() -> list[str]:
    """Every ESI proto, relative to ``proto/``, in a stable order."""
    return sorted(
        str(p.relative_to(PROTO_ROOT))
        for sub in SUBPACKAGES
        for p in (PROTO_ROOT / "solarnetwork" / "esi" / sub).glob("*.proto")
    )


def run_protoc(out: Path) -> None:
    """Run the four generators into ``out`` (top-level ``solarnetwork`` tree)."""
    from grpc_tools import protoc  # dev-time only: the test extra

    wkt = Path(protoc.__file__).parent / "_proto"
    files = proto_files()
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt}",
        f"--python_out={out}",
        f"--mypy_out=quiet:{out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out=quiet:{out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + " ".join(files))


def rewrite(text: str, sub: str) -> str:
    """Make ``from solarnetwork.esi.X import`` relative, fix the module name."""

    def relative(m: re.Match[str]) -> str:
        target = m.group(1)
        return "from . import " if target == sub else f"from ..{target} import "

    text = _FROM_IMPORT.sub(relative, text)
    return _MODULE_NAME.sub(lambda m: f"'{PACKAGE}.solarnetwork.esi.{m.group(1)}.{m.group(2)}'", text)


def keep(path: Path, sub: str) -> bool:
    """Only the service files get gRPC modules (the domain ones would be empty)."""
    return "_pb2_grpc" not in path.name or sub == "service"


def generate(out: Path) -> None:
    """Write the whole ``_proto`` package into ``out`` (replacing it)."""
    with tempfile.TemporaryDirectory() as raw:
        raw_dir = Path(raw)
        run_protoc(raw_dir)
        if out.exists():
            shutil.rmtree(out)
        for rel, doc in INIT_DOCS.items():
            (out / rel).mkdir(parents=True, exist_ok=True)
            (out / rel / "__init__.py").write_text(f'"""{doc}"""\n')
        for sub in SUBPACKAGES:
            for src in sorted((raw_dir / "solarnetwork" / "esi" / sub).iterdir()):
                if keep(src, sub):
                    dest = out / "solarnetwork" / "esi" / sub / src.name
                    dest.write_text(rewrite(src.read_text(), sub))


def stale_files(committed: Path, fresh: Path) -> list[str]:
    """Relative paths that differ between two trees (missing on either side too)."""
    names = {
        str(p.relative_to(root))
        for root in (committed, fresh)
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    return sorted(
        n for n in names
        if not (committed / n).is_file()
        or not (fresh / n).is_file()
        or not filecmp.cmp(committed / n, fresh / n, shallow=False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target directory")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = parser.parse_args(argv)
    if not args.check:
        generate(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        generate(fresh)
        stale = stale_files(args.out, fresh)
    if stale:
        print(f"{args.out} is stale; run tools/gen_esi_python.py. Differs:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
