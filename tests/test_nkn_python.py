"""``resi.nkn`` from asyncio: identities, NknClient and the embedded
LocalNode (everything on loopback, no internet)."""

from __future__ import annotations

import asyncio

import pytest

import resi
from resi.nkn import Identity, LocalNode, NknClient, NknMessage, generate_identity, identity_from_seed

pytestmark = pytest.mark.timeout(60)

# Test vector of the NKN client protocol notes (§12).
SEED = "039e481266e5a05168c1d834a94db512dbc235877f150c5a3cc1e3903662d673"
PUBLIC_KEY = "f444c54d74e46fd8499696fcade6bc778908a978db7a229de496b94e1d66f9bf"
SUBCLIENTS = 2


def test_identity_from_known_seed() -> None:
    ident = identity_from_seed(SEED)
    assert ident == Identity(seed=SEED, public_key=PUBLIC_KEY, address=PUBLIC_KEY)
    assert Identity.from_seed(SEED.upper()) == ident
    assert SEED not in repr(ident)


def test_generate_gives_distinct_identities() -> None:
    ids = {generate_identity() for _ in range(8)}
    assert len(ids) == 8
    for ident in ids:
        assert len(ident.seed) == 64 and len(ident.public_key) == 64
        assert identity_from_seed(ident.seed) == ident


@pytest.mark.parametrize("bad", ["", "00", "zz" * 32, SEED + "00"])
def test_bad_seed_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        identity_from_seed(bad)
    with pytest.raises(ValueError):
        NknClient(bad)


async def _ready(node: LocalNode, seed: Identity | str | None = None, identifier: str = "") -> NknClient:
    client = NknClient(seed, identifier=identifier, subclients=SUBCLIENTS, rpc_servers=[node.rpc_url])
    # Every sub-client: sub-client i sends to the peer's sub-client i.
    await client.wait_ready(timeout=15, count=SUBCLIENTS)
    return client


async def test_two_clients_exchange_messages_and_a_reply() -> None:
    async with LocalNode() as node:
        assert node.running and node.rpc_url.startswith("http://127.0.0.1:")
        a = await _ready(node, SEED, identifier="a")
        b = await _ready(node, identifier="b")
        try:
            assert a.address == f"a.{PUBLIC_KEY}"
            assert b.address == f"b.{b.identity.public_key}"

            # a -> b, binary data with every byte value.
            payload = bytes(range(256)) * 4
            msg_id = await a.send(b.address, payload)
            assert isinstance(msg_id, bytes) and len(msg_id) == 8
            got = await b.recv(timeout=10)
            assert isinstance(got, NknMessage)
            assert (got.src, got.data, got.message_id) == (a.address, payload, msg_id)
            assert got.encrypted and not got.is_text

            # b -> a (a bytearray works too).
            await b.send(a.address, bytearray(b"\x00\xffback"))
            back = await a.recv(timeout=10)
            assert (back.src, back.data) == (b.address, b"\x00\xffback")

            # A request and its reply.
            async def answer() -> None:
                req = await b.recv(timeout=10)
                assert req.data == b"ping\x00"
                await b.reply(req, b"pong\x00" + req.data)

            responder = asyncio.ensure_future(answer())
            reply = await a.send_and_wait_reply(b.address, b"ping\x00", timeout=10)
            await responder
            assert reply == b"pong\x00ping\x00"

            # Nothing else arrived (duplicates across sub-clients removed).
            with pytest.raises(TimeoutError):
                await b.recv(timeout=0.3)
            with pytest.raises(TimeoutError):
                await a.recv(timeout=0.1)

            stats = node.stats()
            # Each message goes over every sub-client: relayed once per pair.
            assert stats["relayed"] >= 4
            assert stats["outbound_messages"] >= 4
            assert stats["clients_connected"] == 2 * SUBCLIENTS
            assert stats["dropped_loss"] == 0
        finally:
            a.close()
            b.close()
        with pytest.raises(resi.ResiError):
            await a.recv(timeout=1)
    assert not node.running


async def test_reply_times_out_without_an_answer() -> None:
    async with LocalNode() as node:
        a = await _ready(node)
        b = await _ready(node)
        try:
            with pytest.raises(TimeoutError):
                await a.send_and_wait_reply(b.address, b"unanswered", timeout=0.5)
            assert (await b.recv(timeout=5)).data == b"unanswered"
            with pytest.raises(ValueError):
                await a.send("not-an-address", b"x")
        finally:
            a.close()
            b.close()


async def test_local_node_counts_relayed_messages_and_losses() -> None:
    node = LocalNode(loss_seed=1)
    await node.start(loss=1.0)
    try:
        async with NknClient(subclients=1, rpc_servers=[node.rpc_url]) as a, NknClient(
            subclients=1, rpc_servers=[node.rpc_url]
        ) as b:
            before = node.stats()
            for _ in range(3):
                await a.send(b.address, b"lost")
            with pytest.raises(TimeoutError):
                await b.recv(timeout=0.5)
            after = node.stats()
            assert after["dropped_loss"] - before["dropped_loss"] == 3
            assert after["relayed"] == before["relayed"]
    finally:
        await node.stop()
    with pytest.raises(RuntimeError):
        node.stats()


async def test_set_loss_cuts_and_restores_a_running_node() -> None:
    async with LocalNode() as node, NknClient(subclients=1, rpc_servers=[node.rpc_url]) as a, NknClient(
        subclients=1, rpc_servers=[node.rpc_url]
    ) as b:
        await a.send(b.address, b"before")
        assert (await b.recv(timeout=5)).data == b"before"
        node.set_loss(1.0)
        assert node.loss == 1.0 and node._n.loss == 1.0
        await a.send(b.address, b"during")
        with pytest.raises(TimeoutError):
            await b.recv(timeout=0.5)
        assert node.stats()["dropped_loss"] == 1
        assert node.stats()["clients_connected"] == 2  # an outage, not a disconnect
        node.set_loss(0.0)
        await a.send(b.address, b"after")
        assert (await b.recv(timeout=5)).data == b"after"
        with pytest.raises(ValueError):
            node.set_loss(1.5)
        assert node.loss == 0.0


async def test_closed_client_fails_a_waiting_recv() -> None:
    async with LocalNode() as node, NknClient(subclients=1, rpc_servers=[node.rpc_url]) as c:
        waiting = asyncio.ensure_future(c.recv())
        await asyncio.sleep(0.05)
        c.close()
        with pytest.raises(resi.ResiError):
            await asyncio.wait_for(waiting, 5)
