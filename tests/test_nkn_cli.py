"""NKN from the ``resi`` command: identities for config files, the embedded
local NKN node as a process, and a gateway pair whose session runs over a
TCP path and an NKN path through that node (all on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import signal
import urllib.request

import pytest

from conftest import ResiFactory, run_resi
from grpc_helpers import EsiServer, check_all_shapes, check_unary, channel

SEED_A = "039e481266e5a05168c1d834a94db512dbc235877f150c5a3cc1e3903662d673"
PUBKEY_A = "f444c54d74e46fd8499696fcade6bc778908a978db7a229de496b94e1d66f9bf"
NODE_RPC = re.compile(r"^resi: NKN seed RPC on (\S+)\s*$")


def test_identity_of_a_known_seed():
    r = run_resi("nkn-identity", "--seed", SEED_A)
    assert r.returncode == 0, r.stderr
    assert f'Seed = "{SEED_A}"' in r.stdout
    assert PUBKEY_A in r.stdout


def test_new_identities_are_random_and_valid():
    seeds = set()
    for _ in range(2):
        r = run_resi("nkn-identity")
        assert r.returncode == 0, r.stderr
        seed = re.search(r'Seed = "([0-9a-f]{64})"', r.stdout).group(1)
        seeds.add(seed)
    assert len(seeds) == 2


def test_identity_rejects_a_bad_seed():
    r = run_resi("nkn-identity", "--seed", "xyz")
    assert r.returncode == 2
    assert "--seed" in r.stderr


def start_node(resi: ResiFactory, *extra: str):
    node = resi.start(args=["nkn-node", "--rpc-listen", "127.0.0.1:0", *extra], name="nkn-node")
    line = node.wait_for_line(NODE_RPC.pattern)
    return node, NODE_RPC.match(line).group(1)


def test_nkn_node_answers_the_seed_rpc_and_stops_on_sigterm(resi: ResiFactory):
    node, url = start_node(resi)
    req = urllib.request.Request(
        url,
        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getwsaddr", "params": {"address": PUBKEY_A}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as rsp:
        body = json.load(rsp)
    assert body["id"] == 1
    assert body["result"]["addr"].startswith("127.0.0.1:")
    assert len(body["result"]["pubkey"]) == 64
    node.signal(signal.SIGTERM)
    assert node.wait() == 0


@pytest.mark.parametrize("mode", ["strict", "permissive"])
def test_gateway_pair_over_tcp_and_nkn(resi: ResiFactory, esi_server: EsiServer, mode: str):
    _node, url = start_node(resi)
    seed_end, seed_client = "11" * 32, "22" * 32
    end_addr = re.search(r"# Address = \"([0-9a-f]{64})\"", run_resi("nkn-identity", "--seed", seed_end).stdout).group(1)
    end = resi.gateway(
        listen="127.0.0.1:0",
        address=esi_server.addr,
        mode=mode,
        name="end",
        extra=f'[Nkn]\nSeed = "{seed_end}"\nSubclients = 2\nRpcServers = "{url}"\n',
    )
    client = resi.gateway(
        listen="127.0.0.1:0",
        address=end.addrs[0],
        mode=mode,
        name="client",
        extra=f'[Nkn]\nAddress = "{end_addr}"\nSeed = "{seed_client}"\nSubclients = 2\nRpcServers = "{url}"\n',
    )
    client.wait_for_line(r"path up.*path=1|path=1.*path up", timeout=30)
    check_all_shapes(client.addrs[0])
    with channel(client.addrs[0]) as ch:
        for _ in range(5):
            check_unary(ch)
