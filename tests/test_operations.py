"""What operators watch, from outside: the gRPC health service a gateway
answers (grpcio's health stub), the Prometheus endpoint (scraped over HTTP,
parsed by prometheus_client), and the JSON log records of `resi gateway`.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
import urllib.error
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import resi
from conftest import ResiFactory, ResiProcess
from grpc_helpers import CALL_TIMEOUT, SERVICE, EsiServer, channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
METRICS = re.compile(r"^resi: metrics on (http://\S+/metrics)\s*$")


def check(target: str, service: str = "") -> int:
    with channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT).status


def wait_status(target: str, want: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = check(target)
        if got == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"health of {target} stayed {got}, wanted {want}")


def pair(resi: ResiFactory, esi_server: EsiServer, metrics: bool = False) -> tuple[ResiProcess, ResiProcess]:
    extra = '[Metrics]\nListen = "127.0.0.1:0"\n' if metrics else ""
    end = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, name="end", extra=extra)
    client = resi.gateway(listen="127.0.0.1:0", address=end.addrs[:2], name="client", extra=extra)
    return client, end


def test_health_check_and_watch_with_grpcio(resi: ResiFactory, esi_server: EsiServer):
    client, end = pair(resi, esi_server)
    target = client.addrs[0]
    wait_status(target, SERVING)
    before = esi_server.calls  # the end gateway's discovery probe
    for service in ("esi.Esi", "solarnetwork.esi.service.DerFacilityService"):
        assert check(target, service) == SERVING
        assert check(end.addrs[0], service) == SERVING
    with pytest.raises(grpc.RpcError) as info:
        check(target, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert esi_server.calls == before, "health calls are answered by the gateways, not forwarded"

    with channel(target) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == SERVING
        end.signal(signal.SIGTERM)  # the client gateway's session loses every path
        assert end.wait() == 0
        assert next(watch).status == NOT_SERVING
        watch.cancel()
    assert check(target) == NOT_SERVING


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=CALL_TIMEOUT) as rsp:
        return rsp.headers["Content-Type"], rsp.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict, metric: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == metric and set(labels.items()) <= set(ls))


def unary(target: str, n: int, fail: str | None = None) -> None:
    md = [("x-fail", fail)] if fail else None
    with channel(target) as ch:
        call = ch.unary_unary(f"/{SERVICE}/Unary")
        for i in range(n):
            if fail:
                with pytest.raises(grpc.RpcError) as info:
                    call(b"m%d" % i, timeout=CALL_TIMEOUT, metadata=md)
                assert info.value.code() == grpc.StatusCode[fail]
            else:
                assert call(b"m%d" % i, timeout=CALL_TIMEOUT) == b"echo:m%d" % i


def test_metrics_scraped_and_parsed(resi: ResiFactory, esi_server: EsiServer):
    client, end = pair(resi, esi_server, metrics=True)
    urls = {p.name: METRICS.match(p.wait_for_line(METRICS.pattern)).group(1) for p in (client, end)}
    wait_status(client.addrs[0], SERVING)
    unary(client.addrs[0], 6)
    unary(client.addrs[0], 3, fail="PERMISSION_DENIED")

    ctype, text = scrape(urls["client"])
    assert ctype.startswith("text/plain; version=0.0.4")
    c = samples(text)
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["resi_calls_forwarded"] == "counter" and types["resi_path_up"] == "gauge", types
    assert total(c, "resi_calls_forwarded_total", code="OK") == 6
    assert total(c, "resi_calls_forwarded_total", code="PERMISSION_DENIED") == 3
    assert total(c, "resi_gateway_info", name="client") == 1
    assert total(c, "resi_upstream_up") == 1
    assert total(c, "resi_sessions_open", role="dialled") == 1
    assert total(c, "resi_path_up", role="dialled") == 2, "both paths live"
    assert total(c, "resi_path_rtt_seconds", role="dialled") > 0

    e = samples(scrape(urls["end"])[1])
    assert total(e, "resi_sessions_open", role="accepted") == 1
    delivered = total(e, "resi_session_delivered_bytes_total", role="accepted")
    assert delivered > 0
    assert total(e, "resi_path_first_bytes_total", role="accepted") == delivered
    assert total(e, "resi_path_mismatches_total") == 0
    assert total(e, "resi_calls_forwarded_total", code="OK") == 6

    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(urls["end"].replace("/metrics", "/"))
    assert info.value.code == 404


async def test_python_gateway_metrics_keyword(esi_server: EsiServer):
    async with resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr, metrics_listen="127.0.0.1:0", name="py-gw") as gw:
        assert gw.metrics_address is not None
        _, text = await asyncio.to_thread(scrape, f"http://{gw.metrics_address}/metrics")
        assert total(samples(text), "resi_gateway_info", name="py-gw") == 1
    assert gw.metrics_address is None
    with pytest.raises(resi.ConfigError) as info:
        resi.Gateway(listen="127.0.0.1:0", address=esi_server.addr, metrics_listen="nowhere")
    assert "[Metrics] Listen" in str(info.value)


def test_json_logs_name_every_record(resi: ResiFactory, esi_server: EsiServer):
    path = resi.config(f'[Tcp]\nListen = "127.0.0.1:0"\nAddress = "{esi_server.addr}"\n', "edge-gw.toml")
    gw = resi.start(args=["--log-format", "json", "gateway", "--config", str(path)], name="edge")
    gw.wait_listening(1)
    gw.signal(signal.SIGINT)
    assert gw.wait() == 0
    records = [json.loads(line) for line in gw.lines if line.startswith("{")]
    assert len(records) >= 3, gw.stderr  # configuration loaded, started, stopped at least
    for r in records:
        assert r["gateway"] == "edge-gw", r  # the file's name: no [Resi] Name given
        assert {"timestamp", "level", "target", "message"} <= r.keys(), r
    assert any(r["message"] == "gateway started" for r in records)


def test_reverse_listener_health_follows_the_reverse_channel(resi: ResiFactory, esi_server: EsiServer):
    exchange = EsiServer()
    exchange.start()
    try:
        end = resi.start(
            '[Tcp]\nListen = "127.0.0.1:0"\n'
            f'Address = "{esi_server.addr}"\n[Reverse]\nListen = "127.0.0.1:0"\n[Resi]\nName = "end"\n',
            name="end",
        )
        end_addr = end.wait_listening(1)[0]
        line = r"^resi: reverse listening on (\S+)\s*$"
        reverse = re.match(line, end.wait_for_line(line)).group(1)
        assert check(reverse) == NOT_SERVING, "no client gateway has opened a reverse channel yet"
        client = resi.gateway(
            listen="127.0.0.1:0", address=end_addr, name="client", extra=f'[Reverse]\nAddress = "{exchange.addr}"\n'
        )
        wait_status(reverse, SERVING)
        client.signal(signal.SIGTERM)
        assert client.wait() == 0
        wait_status(reverse, NOT_SERVING)
    finally:
        exchange.stop()


def wait_metrics(url: str, want: dict[str, float], timeout: float) -> float:
    """Polls ``url`` until each metric of ``want`` (summed over its
    samples) has its value; returns how long that took."""
    start = time.monotonic()
    while True:
        found = samples(scrape(url)[1])
        got = {metric: total(found, metric) for metric in want}
        if got == want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"after {timeout} s the end gateway's metrics are {got}, wanted {want}")
        time.sleep(0.02)


def test_a_client_gateway_restarted_after_kill_9_frees_its_old_session_at_once(resi: ResiFactory, esi_server: EsiServer):
    metrics = '[Metrics]\nListen = "127.0.0.1:0"\n'
    end = resi.gateway(listen=["127.0.0.1:0", "127.0.0.1:0"], address=esi_server.addr, name="end", extra=metrics)
    url = METRICS.match(end.wait_for_line(METRICS.pattern)).group(1)
    client = resi.gateway(listen="127.0.0.1:0", address=end.addrs[:2], name="client")
    listen = client.addrs[0]
    wait_status(listen, SERVING)
    unary(listen, 2)
    client.kill()  # SIGKILL: no Close is sent
    # Both paths closed: the end gateway keeps the session for its
    # ResumeTimeout (30 s), as in an outage of every path.
    wait_metrics(url, {"resi_sessions_open": 1, "resi_path_up": 0, "resi_sessions_superseded_total": 0}, timeout=10)

    client = resi.gateway(listen=listen, address=end.addrs[:2], name="client")  # the same Name and port
    took = wait_metrics(url, {"resi_sessions_open": 1, "resi_path_up": 2, "resi_sessions_superseded_total": 1}, timeout=10)
    assert took < 2, f"the old session was freed only {took:.2f} s after the restarted gateway listened"
    print(f"old session freed {took:.3f} s after the restarted client gateway listened")
    unary(listen, 2)
    line = end.wait_for_line("dialler restarted")
    assert "client" in line and "old" in line and "new" in line, line
