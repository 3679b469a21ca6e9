"""The `resi` command: configuration errors, check-config, the original
`-config FILE` form, version, signals."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from conftest import ResiFactory, gateway_config, run_resi

# The brief's original example file; its elided NKN values are filled in to
# full length (64 hex digits each).
ORIGINAL_EXAMPLE = """\
[Tcp]
Address = "127.0.0.1:9000"   # where this gateway forwards over TCP
Listen  = "localhost:4001"   # where it accepts ESI (and RESI) connections
[Nkn]
Address = "919c54b3a1d1e8f0ad64b0a6e3e86b7fa8d6d5d8b7cd7e6cfd1f4c6f4f0e3b2a"  # NKN address of the next gateway
Seed    = "039e481266e5a05168c1d834a94db512dbc235877f150c5a3cc1e3903672c673"  # this gateway's NKN identity (ed25519 seed, hex)
Subclients = 4
[Resi]
Mode = "strict"              # or "permissive"
"""

GOOD_TCP = '[Tcp]\nListen = "127.0.0.1:0"\nAddress = "127.0.0.1:9000"\n'

# (file contents, fragments the error message must contain)
BAD_CONFIGS = {
    "unknown-key": (
        GOOD_TCP + '[Resi]\nMod = "strict"\n',
        ["[Resi] Mod", "unknown key", "did you mean Mode"],
    ),
    "unknown-section": (
        GOOD_TCP + '[Resii]\nMode = "strict"\n',
        ["[Resii]", "unknown section", "did you mean [Resi]"],
    ),
    "bad-mode": (
        GOOD_TCP + '[Resi]\nMode = "fast"\n',
        ['[Resi] Mode: expected "strict" or "permissive", got "fast"'],
    ),
    "bad-address-port": (
        '[Tcp]\nListen = "127.0.0.1:0"\nAddress = "127.0.0.1:99999"\n',
        ["[Tcp] Address", "99999", "out of range"],
    ),
    "bad-address-no-port": (
        '[Tcp]\nListen = "127.0.0.1:0"\nAddress = ["127.0.0.1:9000", "localhost"]\n',
        ["[Tcp] Address[1]", 'expected "host:port"', "no port"],
    ),
    "bad-duration": (
        GOOD_TCP + '[Resi]\nHeartbeatInterval = "soon"\n',
        ["[Resi] HeartbeatInterval", "expected a duration"],
    ),
    "dead-before-heartbeat": (
        GOOD_TCP + '[Resi]\nHeartbeatInterval = "500ms"\nDeadTimeout = "100ms"\n',
        ["[Resi] DeadTimeout", "must be longer than [Resi] HeartbeatInterval"],
    ),
    "bad-size": (
        GOOD_TCP + '[Resi]\nMaxMessageSize = "4GiB"\n',
        ["[Resi] MaxMessageSize", "out of range"],
    ),
    "bad-seed": (
        GOOD_TCP + '[Nkn]\nSeed = "039e4812"\n',
        ["[Nkn] Seed", "64 hex digits"],
    ),
    "no-section": (
        '[Resi]\nMode = "strict"\n',
        ["at least one of the sections [Tcp] and [Nkn]"],
    ),
    "no-upstream": (
        '[Tcp]\nListen = "127.0.0.1:0"\n',
        ["[Tcp] Address", "missing", "upstream"],
    ),
    "toml-syntax": (
        '[Tcp]\nListen = "127.0.0.1:0"\nAddress = 127.0.0.1:9000\n',
        ["line 3, column", "invalid TOML"],
    ),
}


@pytest.fixture
def config_file(tmp_path: Path):
    def write(text: str, name: str = "gateway.toml") -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return write


def test_version():
    r = run_resi("version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("resi "), r.stdout
    import resi

    assert resi.__version__ in r.stdout


def test_help_exits_zero():
    r = run_resi("--help")
    assert r.returncode == 0
    assert "gateway" in r.stdout and "check-config" in r.stdout


def test_unknown_subcommand_is_a_usage_error():
    r = run_resi("frobnicate")
    assert r.returncode == 2
    assert "frobnicate" in r.stderr


def test_original_example_passes_check_config(config_file):
    path = config_file(ORIGINAL_EXAMPLE)
    r = run_resi("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    assert "mode: strict" in r.stdout
    assert "127.0.0.1:9000" in r.stdout and "localhost:4001" in r.stdout
    assert "subclients: 4" in r.stdout


def test_case_insensitive_names_pass_check_config(config_file):
    path = config_file(
        '[tcp]\nlisten = ["127.0.0.1:0", "127.0.0.1:0"]\naddress = ["127.0.0.1:9000", "127.0.0.1:9001"]\n'
        '[resi]\nmode = "Permissive"\nheartbeat_interval = "100ms"\nDeadTimeout = 0.5\nMaxMessageSize = "16MiB"\n'
    )
    r = run_resi("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert "mode: permissive" in r.stdout
    assert "2 paths" in r.stdout


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
@pytest.mark.parametrize("form", ["check-config", "gateway --config", "-config"])
def test_bad_config_exits_2_naming_file_key_and_problem(config_file, case, form):
    text, fragments = BAD_CONFIGS[case]
    path = config_file(text, name=f"{case}.toml")
    r = run_resi(*form.split(), str(path), timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr
    assert f"{path}:" in err, err
    for frag in fragments:
        assert frag in err, f"{frag!r} not in {err!r}"
    assert "listening on" not in err


# Four bad values, a misspelt key and a rule across keys in one file.
MANY_ERRORS = (
    '[Tcp]\nListen = ["127.0.0.1:5", "127.0.0.1:5"]\nAdress = "127.0.0.1:1"\n'
    '[Resi]\nMode = "fast"\nHeartbeatInterval = "soon"\n'
    '[Nkn]\nSeed = "abcd"\nRpcServers = ["ftp://a", "http://b:1", 7]\n'
)
MANY_ERRORS_FOUND = [
    "[Tcp] Adress: unknown key (did you mean Address?)",
    '[Resi] Mode: expected "strict" or "permissive", got "fast"',
    "[Resi] HeartbeatInterval: expected a duration",
    "[Nkn] Seed: expected a seed of 64 hex digits",
    '[Nkn] RpcServers[0]: expected an http:// URL, got "ftp://a"',
    "[Nkn] RpcServers[2]: expected a string, got an integer (7)",
    '[Tcp] Listen[1]: "127.0.0.1:5" is listed twice',
]


@pytest.mark.parametrize("form", ["check-config", "gateway --config"])
def test_every_error_is_reported_at_once(config_file, form):
    path = config_file(MANY_ERRORS)
    r = run_resi(*form.split(), str(path), timeout=30)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.startswith("resi: error: ")]
    assert len(lines) == len(MANY_ERRORS_FOUND), r.stderr
    for line, want in zip(lines, MANY_ERRORS_FOUND):
        assert line.startswith(f"resi: error: {path}: {want}"), (line, want)
    assert f"resi: {len(MANY_ERRORS_FOUND)} errors" in r.stderr
    # A misspelt upstream is not also reported missing.
    assert "missing" not in r.stderr
    assert r.stdout == "" and "listening on" not in r.stderr


@pytest.mark.parametrize(
    "tcp, warning",
    [
        (
            'Listen = "0.0.0.0:4001"\nAddress = "127.0.0.1:4001"\n',
            '[Tcp] Address "127.0.0.1:4001" is this gateway\'s own [Tcp] Listen "0.0.0.0:4001": it would forward calls to itself',
        ),
        (
            'Listen = "localhost:4001"\nAddress = ["127.0.0.1:9", "[::1]:4001"]\n',
            '[Tcp] Address "[::1]:4001" is this gateway\'s own [Tcp] Listen "localhost:4001"',
        ),
        (
            'Listen = "127.0.0.1:0"\nAddress = ["127.0.0.1:9000", "localhost:9000"]\n',
            '[Tcp] Address "localhost:9000" is the same address as [Tcp] Address "127.0.0.1:9000": '
            "two paths over the same route add no redundancy",
        ),
        (
            'Listen = ["127.0.0.1:4001", "localhost:4001"]\nAddress = "127.0.0.1:9"\n',
            '[Tcp] Listen "localhost:4001" is the same address as [Tcp] Listen "127.0.0.1:4001": both cannot be bound',
        ),
    ],
    ids=["any-address", "localhost", "duplicate-path", "duplicate-listen"],
)
def test_check_config_warns_but_exits_0(config_file, tcp, warning):
    path = config_file("[Tcp]\n" + tcp)
    r = run_resi("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert f"{path}: OK" in r.stdout
    assert f"resi: WARNING: {warning}" in r.stderr, r.stderr


def test_check_config_has_no_warning_for_a_sound_pair(config_file):
    path = config_file('[Tcp]\nListen = "127.0.0.1:4001"\nAddress = ["127.0.0.1:9000", "127.0.0.1:9001"]\n')
    r = run_resi("check-config", str(path))
    assert r.returncode == 0, r.stderr
    assert "WARNING" not in r.stderr, r.stderr


@pytest.mark.parametrize("form", ["check-config", "gateway --config", "-config"])
def test_missing_file_exits_2(tmp_path, form):
    path = tmp_path / "nope.toml"
    r = run_resi(*form.split(), str(path))
    assert r.returncode == 2, r.stderr
    assert f"{path}: cannot read the file" in r.stderr
    assert "No such file" in r.stderr


@pytest.mark.parametrize("args", [["-config"], ["gateway", "-config"], ["gateway", "--config"], ["--config"]])
def test_config_forms_run_a_gateway(resi: ResiFactory, args):
    path = resi.config(gateway_config(listen=["127.0.0.1:0", "127.0.0.1:0"], address="127.0.0.1:9"))
    p = resi.start(args=[*args, str(path)], name="form")
    addrs = p.wait_listening(2)
    for a in addrs:
        host, port = a.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        socket.create_connection((host, int(port)), timeout=5).close()
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0, p.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_an_idle_gateway_with_exit_0(resi: ResiFactory, sig):
    p = resi.gateway(listen="127.0.0.1:0", address="127.0.0.1:9")
    p.signal(sig)
    assert p.wait(20) == 0, p.stderr
    assert sig.name in p.stderr


def test_log_level_flag_and_env(resi: ResiFactory):
    path = resi.config(gateway_config(listen="127.0.0.1:0", address="127.0.0.1:9"))
    p = resi.start(args=["gateway", "--config", str(path), "--log-level", "warn"], name="quiet")
    p.wait_listening(1)
    p.signal(signal.SIGTERM)
    assert p.wait(20) == 0
    assert "INFO" not in p.stderr, p.stderr
    r = run_resi("gateway", "--config", str(path), "--log-level", "no=such=level")
    assert r.returncode == 2
    assert "log level" in r.stderr


def test_address_in_use_fails_with_exit_1(resi: ResiFactory):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        path = resi.config(gateway_config(listen=f"127.0.0.1:{port}", address="127.0.0.1:9"))
        p = resi.start(args=["gateway", "--config", str(path)], name="busy")
        assert p.wait(20) == 1, p.stderr
        assert f"127.0.0.1:{port}" in p.stderr
    finally:
        busy.close()


def test_sigint_does_not_wait_the_grace_for_a_session_without_paths(resi: ResiFactory):
    """A session whose paths all died has no call in flight: SIGINT stops
    the gateway at once, not after ShutdownGrace (10 s here)."""
    import asyncio
    import time

    import resi as resi_api
    from resi.testing import EsiNode

    node = EsiNode().start()
    timers = 'HeartbeatInterval = "50ms"\nDeadTimeout = "400ms"\n'
    p = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=node.address, name="end", extra=timers)
    relays = [resi_api.FaultRelay(a) for a in p.addrs[:2]]

    async def cut_every_path() -> None:
        client = await resi_api.Client.connect_redundant([r.address for r in relays], heartbeat_interval="50ms", dead_timeout="400ms")
        try:
            assert await client.unary("/resi.test.Echo/Unary", b"s", timeout=5) == b"s"
            for r in relays:
                r.blackhole()
            p.wait_for_line(r"path down", timeout=10)
            deadline = time.monotonic() + 10
            while sum("path down" in line for line in p.stderr.splitlines()) < 2:
                assert time.monotonic() < deadline, p.stderr
                await asyncio.sleep(0.05)
            start = time.monotonic()
            p.signal(signal.SIGINT)
            assert await asyncio.to_thread(p.wait, 20) == 0, p.stderr
            took = time.monotonic() - start
            assert took < 4, f"SIGINT took {took:.1f}s with no call in flight:\n{p.stderr}"
        finally:
            await client.close()

    try:
        asyncio.run(cut_every_path())
    finally:
        for r in relays:
            r.close()
        node.stop()
