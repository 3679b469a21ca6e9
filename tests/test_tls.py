"""TLS from Python: a mutual-TLS gateway made with ``tls_*`` keywords,
reached by ``resi.Client`` (plain and redundant) and by a grpcio TLS
client; a missing client certificate, a wrong server name and a missing
file are refused; ``resi check-config`` warns about a plaintext listener
beyond loopback. Certificates are made with the ``openssl`` command."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest

import resi
from conftest import run_resi
from grpc_helpers import SERVICE, EsiServer, check_all_shapes, check_unary


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _leaf(d: Path, name: str, san: str) -> None:
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client one."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=resi test CA", cwd=d)
    _leaf(d, "server", "DNS:localhost,IP:127.0.0.1")
    _leaf(d, "client", "DNS:client")
    return d


def _end(pki: Path, esi_server: EsiServer) -> resi.Gateway:
    return resi.Gateway(
        listen="127.0.0.1:0",
        address=esi_server.addr,
        tls_cert=pki / "server.pem",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
        heartbeat_interval="100ms",
        dead_timeout="500ms",
        connect_timeout="2s",
    )


def _client_tls(pki: Path) -> dict[str, object]:
    return {"tls_ca": pki / "ca.pem", "tls_cert": pki / "client.pem", "tls_key": pki / "client.key"}


async def test_mutual_tls_gateway_from_python(pki: Path, esi_server: EsiServer):
    async with _end(pki, esi_server) as end:
        async with await resi.Client.connect(end.address, **_client_tls(pki)) as c:
            assert await c.unary(f"/{SERVICE}/Unary", b"tls", timeout=10) == b"echo:tls"
        paths = [end.address, end.address]
        async with await resi.Client.connect_redundant(paths, heartbeat_interval="100ms", **_client_tls(pki)) as c:
            assert c.upstream_kind == "resi"
            assert await c.unary(f"/{SERVICE}/Unary", b"two paths", timeout=10) == b"echo:two paths"
            stats = await c.stats()
            assert stats is not None and len(stats.paths) == 2

        # grpcio over TLS with a client certificate, ALPN h2.
        def grpcio_call() -> None:
            creds = grpc.ssl_channel_credentials(
                (pki / "ca.pem").read_bytes(), (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
            )
            with grpc.secure_channel(end.address, creds) as ch:
                check_unary(ch)

        await asyncio.to_thread(grpcio_call)


async def test_refused_certificates_and_names(pki: Path, esi_server: EsiServer):
    async with _end(pki, esi_server) as end:
        with pytest.raises(resi.SessionError, match="CertificateRequired"):
            await resi.Client.connect(end.address, tls_ca=pki / "ca.pem", connect_timeout=2)
        with pytest.raises(resi.SessionError, match="not valid for name"):
            await resi.Client.connect(end.address, tls_server_name="other.example", connect_timeout=2, **_client_tls(pki))


async def test_tls_file_errors(pki: Path, tmp_path: Path):
    missing = tmp_path / "x.pem"
    with pytest.raises(resi.ConfigError, match=r"\[Tls\] Cert: cannot read .*x\.pem.*No such file"):
        resi.Gateway(listen="127.0.0.1:0", address="127.0.0.1:9", tls_cert=missing, tls_key=pki / "server.key")
    with pytest.raises(resi.ConfigError, match=r"\[Tls\] UpstreamCa: missing"):
        await resi.Client.connect("127.0.0.1:9", tls_cert=pki / "client.pem", tls_key=pki / "client.key")
    with pytest.raises(resi.ConfigError, match=r"\[Tls\] UpstreamCa: .*holds no CERTIFICATE"):
        await resi.Client.connect("127.0.0.1:9", tls_ca=pki / "client.key")


def test_check_config_warns_about_plaintext_beyond_loopback(tmp_path: Path, pki: Path):
    exposed = tmp_path / "exposed.toml"
    exposed.write_text('[Tcp]\nListen = ["127.0.0.1:0", "0.0.0.0:4001"]\nAddress = "127.0.0.1:9"\n')
    r = run_resi("check-config", str(exposed))
    assert r.returncode == 0, r.stderr
    assert 'resi: WARNING: [Tcp] Listen "0.0.0.0:4001" is reachable beyond loopback' in r.stderr
    assert "127.0.0.1:0" not in r.stderr
    with_tls = tmp_path / "tls.toml"
    with_tls.write_text(
        exposed.read_text() + f'[Tls]\nCert = "{pki / "server.pem"}"\nKey = "{pki / "server.key"}"\n'
    )
    r = run_resi("check-config", str(with_tls))
    assert r.returncode == 0, r.stderr
    assert "WARNING" not in r.stderr
    assert "[Tls]  listener: TLS 1.3" in r.stdout


async def test_gateway_pair_over_mutual_tls_from_kwargs(pki: Path, esi_server: EsiServer):
    """A client gateway (plain loopback listener, client certificate
    upstream) and a mutual-TLS end gateway: grpcio sees every RPC shape."""
    async with _end(pki, esi_server) as end:
        client = resi.Gateway(
            listen="127.0.0.1:0",
            address=[end.address, end.address],
            tls_upstream_ca=pki / "ca.pem",
            tls_cert=pki / "client.pem",
            tls_key=pki / "client.key",
            tls_plain_listen=True,
            heartbeat_interval="100ms",
            dead_timeout="500ms",
        )
        async with client:
            await asyncio.to_thread(check_all_shapes, client.address)
            assert client.upstream_kind == "resi"
            stats = await client.upstream_stats()
            assert stats is not None and len(stats.paths) == 2
