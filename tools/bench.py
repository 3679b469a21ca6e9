"""The benchmark command: every figure of docs/performance.md in one run.

    python tools/bench.py                  # default: 5 rounds, 1 s per figure (a few minutes)
    python tools/bench.py --rounds 9 --secs 3
    python tools/bench.py --no-build       # use the built bench and the installed resi as they are

What it does, in order (everything on 127.0.0.1):

1. Installs this checkout's Python package in release mode into the
   running interpreter's environment (``maturin develop --release``;
   ``--no-build`` skips it): the ``resi`` command and the Python client.
2. Finds HAProxy (``--haproxy`` or on PATH) and, if missing, installs it
   from the distribution (``apt-get install haproxy``, as root or with
   sudo).
3. Builds (release) and runs ``cargo bench --bench e2e``: one tonic node
   behind direct / two HAProxy L4 hops / the resi pair (two TCP paths,
   permissive and strict, in the bench's process) / the pair as two
   ``resi gateway`` processes (``--resi``, the installed command) / the
   pair over TCP + NKN on a local node / for reference, the same HAProxy
   as two HTTP/2 hops; interleaved rounds of unary 64 B
   (c1 p50/p99, c64 calls/s), unary 16 KiB at c16, server-streamed 64 KiB
   chunks; a path killed mid-run; gateway memory per idle session. Prints
   its table.
4. Starts the tonic node alone (``cargo bench --bench e2e -- --serve``) and
   runs ``tools/bench_clients.py`` against it: resi's Python client and
   resi.aio.Channel against grpc.aio, interleaved. Prints its table.

Exit status 0 when every run finished with every answer checked; 1
otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def find_haproxy(given: str | None) -> str:
    """HAProxy's path; installed from the distribution when missing."""
    if given:
        return given
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    log("HAProxy not found: installing it with apt-get")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "haproxy"]):
        r = subprocess.run(sudo + cmd, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0:
            sys.exit(f"bench: `{' '.join(cmd)}` failed; install HAProxy or pass --haproxy PATH")
    found = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(found, os.X_OK):
        sys.exit("bench: HAProxy is still missing after apt-get install")
    return found


def cargo_bench(*args: str) -> list[str]:
    return ["cargo", "bench", "--quiet", "--bench", "e2e", "--", *args]


def resi_command() -> str | None:
    """The installed ``resi`` command (this interpreter's, else on PATH)."""
    beside = Path(sys.executable).parent / "resi"
    return str(beside) if beside.exists() else shutil.which("resi")


def rust_part(args: argparse.Namespace, haproxy: str) -> int:
    resi = resi_command()
    if resi is None:
        log("no resi command installed: the pair as two processes is left out")
    cmd = cargo_bench("--rounds", str(args.rounds), "--secs", str(args.secs), "--haproxy", haproxy,
                      "--sessions", str(args.sessions), *(["--no-nkn"] if args.no_nkn else []),
                      *(["--resi", resi] if resi else []))
    log("running " + " ".join(cmd))
    return subprocess.run(cmd, cwd=ROOT).returncode


def build(args: argparse.Namespace) -> int:
    if args.no_build:
        return 0
    log("installing resi (release) with maturin develop --release")
    # The build's output goes to stderr: stdout holds the tables only.
    return subprocess.run([sys.executable, "-m", "maturin", "develop", "--release", "-q"], cwd=ROOT,
                          stdout=sys.stderr).returncode


def python_part(args: argparse.Namespace) -> int:
    node = subprocess.Popen(cargo_bench("--serve"), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert node.stdout is not None
        target = node.stdout.readline().strip()
        if not target:
            log("the tonic node did not start")
            return 1
        log(f"tonic node on {target}; resi's Python client against grpc.aio")
        return subprocess.run(
            [sys.executable, str(ROOT / "tools" / "bench_clients.py"), "--target", target,
             "--rounds", str(args.rounds), "--secs", str(args.client_secs)],
            cwd=ROOT,
        ).returncode
    finally:
        if node.stdin is not None:
            node.stdin.close()
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="resi's benchmark command (docs/performance.md)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--secs", type=float, default=1.0, help="seconds per gateway figure (default 1)")
    ap.add_argument("--client-secs", type=float, default=2.0, help="seconds per Python client figure (default 2)")
    ap.add_argument("--sessions", type=int, default=200, help="idle sessions for the memory figure (default 200)")
    ap.add_argument("--haproxy", help="HAProxy executable (default: on PATH, else installed with apt-get)")
    ap.add_argument("--no-nkn", action="store_true", help="leave out the TCP + NKN pair")
    ap.add_argument("--only", choices=["gateways", "clients"], help="run one part only")
    ap.add_argument("--no-build", action="store_true", help="do not (re)install the Python package")
    args = ap.parse_args(argv)
    started = time.monotonic()
    failed = []
    if (rc := build(args)) != 0:
        log(f"installing resi failed with status {rc}")
        return 1
    if args.only != "clients" and (rc := rust_part(args, find_haproxy(args.haproxy))) != 0:
        failed.append(f"gateways part exited with status {rc}")
    if args.only != "gateways" and (rc := python_part(args)) != 0:
        failed.append(f"clients part exited with status {rc}")
    log(f"done in {time.monotonic() - started:.0f} s" + (f" (FAILED: {'; '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
