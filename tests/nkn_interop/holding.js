// (d) A message to an offline destination with msgHoldingSeconds is held by
// resi's local NKN node and delivered when the destination connects; the
// reply reaches the sender. Without holding the message is dropped.
"use strict";
const { assert, nkn, rpcServerAddr, seed, sleep, connected, run } = require("./common");

run("holding", async (clients) => {
  const rpc = rpcServerAddr();
  const alice = new nkn.Client({ seed: seed(), rpcServerAddr: rpc });
  clients.push(alice);
  await connected(alice, "alice");

  const bobSeed = seed();
  const bobKey = new nkn.Key(bobSeed);
  const bobAddr = "later." + bobKey.publicKey;

  // Not held: times out.
  await assert.rejects(alice.send("gone." + bobKey.publicKey, "lost", { responseTimeout: 1500 }), /timeout/i);
  console.log("ok offline without holding: dropped");

  // Held for up to 30 s; bob connects 1.5 s later.
  const pending = alice.send(bobAddr, "while you were out", { msgHoldingSeconds: 30, responseTimeout: 20000 });
  await sleep(1500);
  const bob = new nkn.Client({ seed: bobSeed, identifier: "later", rpcServerAddr: rpc });
  clients.push(bob);
  assert.equal(bob.addr, bobAddr);
  let got = null;
  bob.onMessage(({ src, payload }) => {
    got = { src, payload };
    return "thanks";
  });
  await connected(bob, "bob");
  assert.equal(await pending, "thanks");
  assert.deepEqual(got, { src: alice.addr, payload: "while you were out" });
  console.log("ok held message delivered on connect, reply received");
});
