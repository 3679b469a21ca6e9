// (c) A 3 MB binary payload each way through resi's local NKN node.
"use strict";
const crypto = require("node:crypto");
const { assert, nkn, rpcServerAddr, seed, connected, bytesEqual, run } = require("./common");

run("large", async (clients) => {
  const rpc = rpcServerAddr();
  const opts = { rpcServerAddr: rpc, responseTimeout: 30000 };
  const alice = new nkn.Client({ ...opts, seed: seed() });
  const bob = new nkn.Client({ ...opts, seed: seed() });
  clients.push(alice, bob);
  await Promise.all([connected(alice, "alice"), connected(bob, "bob")]);

  const big = crypto.randomBytes(3 * 1000 * 1000);
  const digest = (b) => crypto.createHash("sha256").update(b).digest("hex");
  bob.onMessage(({ payload }) => {
    // Answer with the digest and a 3 MB reply of its own (the reversed bytes).
    return Uint8Array.from(payload).reverse();
  });
  const t0 = Date.now();
  const reply = await alice.send(bob.addr, big);
  assert.ok(reply instanceof Uint8Array);
  assert.equal(reply.length, big.length);
  assert.ok(bytesEqual(reply, Uint8Array.from(big).reverse()), "reply is the reversed payload");
  console.log(`ok 3 MB each way in ${Date.now() - t0} ms (sha256 ${digest(big).slice(0, 16)}…)`);
});
