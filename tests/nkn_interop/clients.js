// (a) Two SDK Clients exchange binary and text messages and replies, both
// ways, through resi's local NKN node; also ACKs, encrypt:false, noReply and
// a 2-destination multicast.
"use strict";
const { assert, nkn, rpcServerAddr, seed, connected, waitFor, bytesEqual, run } = require("./common");

run("clients", async (clients) => {
  const rpc = rpcServerAddr();
  const alice = new nkn.Client({ seed: seed(), identifier: "alice", rpcServerAddr: rpc });
  const bob = new nkn.Client({ seed: seed(), rpcServerAddr: rpc });
  const carol = new nkn.Client({ seed: seed(), identifier: "carol", rpcServerAddr: rpc });
  clients.push(alice, bob, carol);
  await Promise.all([connected(alice, "alice"), connected(bob, "bob"), connected(carol, "carol")]);
  console.log("connected:", alice.addr, bob.addr, carol.addr);

  const bobGot = [];
  bob.onMessage(({ src, payload, payloadType, isEncrypted }) => {
    bobGot.push({ src, payload, isEncrypted });
    if (typeof payload === "string") {
      if (payload === "ack me") return null; // → ACK
      return "echo: " + payload; // text reply
    }
    return Uint8Array.from(payload).reverse(); // binary reply
  });
  const aliceGot = [];
  alice.onMessage(({ src, payload }) => {
    aliceGot.push({ src, payload });
    return "alice saw " + payload;
  });
  carol.onMessage(({ src, payload }) => "carol got " + payload.length + " bytes");

  // Binary request → binary reply.
  const bin = Uint8Array.from([1, 2, 3, 4, 250, 0, 7]);
  const r1 = await alice.send(bob.addr, bin);
  assert.ok(r1 instanceof Uint8Array, "binary reply is bytes");
  assert.ok(bytesEqual(r1, Uint8Array.from(bin).reverse()), "binary reply content");
  assert.equal(bobGot[0].src, alice.addr, "src is alice's address");
  assert.ok(bytesEqual(bobGot[0].payload, bin));
  assert.equal(bobGot[0].isEncrypted, true);
  console.log("ok binary request/reply");

  // Text request → text reply.
  const r2 = await alice.send(bob.addr, "hello bob ✓");
  assert.equal(r2, "echo: hello bob ✓");
  console.log("ok text request/reply");

  // Handler returns null → ACK → send resolves null.
  const r3 = await alice.send(bob.addr, "ack me");
  assert.equal(r3, null);
  console.log("ok ack");

  // Unencrypted round trip.
  const r4 = await alice.send(bob.addr, "plain", { encrypt: false });
  assert.equal(r4, "echo: plain");
  assert.equal(bobGot[bobGot.length - 1].isEncrypted, false);
  console.log("ok encrypt:false");

  // The other way: bob → alice (identifier address), text reply.
  const r5 = await bob.send(alice.addr, "hi alice");
  assert.equal(r5, "alice saw hi alice");
  assert.equal(aliceGot[0].src, bob.addr);
  console.log("ok bob → alice");

  // noReply resolves at once; the message still arrives.
  const before = bobGot.length;
  const r6 = await alice.send(bob.addr, Uint8Array.from([9]), { noReply: true });
  assert.equal(r6, null);
  await waitFor(() => bobGot.length === before + 1, 5000, "noReply message delivered");
  console.log("ok noReply");

  // Multicast to two destinations (per-destination keys, zlib outbound):
  // resolves with the first reply.
  const r7 = await alice.send([bob.addr, carol.addr], Uint8Array.from([5, 6, 7]));
  assert.ok(r7 !== null && r7 !== undefined, "multicast got a reply");
  await waitFor(() => bobGot.some((m) => bytesEqual(m.payload, [5, 6, 7])), 5000, "bob got multicast");
  // The slower of the two multicast replies is still on its way to alice:
  // one more round trip to each answers after it (each client answers in
  // order, and the node relays in order), so alice is not closed before it
  // arrives (the node would count it dropped for an offline destination).
  assert.equal(await alice.send(bob.addr, "sync"), "echo: sync");
  assert.equal(await alice.send(carol.addr, "sync"), "carol got 4 bytes");
  console.log("ok multicast");
});
