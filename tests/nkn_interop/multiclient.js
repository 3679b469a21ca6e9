// (b) Two SDK MultiClients (4 sub-clients each) exchange messages through
// resi's local NKN node: every message is delivered once, replies arrive.
"use strict";
const { assert, nkn, rpcServerAddr, seed, sleep, connected, waitFor, run } = require("./common");

run("multiclient", async (clients) => {
  const rpc = rpcServerAddr();
  const a = new nkn.MultiClient({ seed: seed(), identifier: "gw-a", numSubClients: 4, rpcServerAddr: rpc });
  const b = new nkn.MultiClient({ seed: seed(), numSubClients: 4, rpcServerAddr: rpc });
  clients.push(a, b);
  await Promise.all([connected(a, "multiclient a"), connected(b, "multiclient b")]);
  const ready = (mc) => Object.values(mc.clients).filter((c) => c.isReady).length;
  await waitFor(() => ready(a) === 4 && ready(b) === 4, 20000, "all 8 sub-clients ready");
  console.log("connected:", a.addr, b.addr, "sub-clients", Object.keys(a.clients));

  const bSeen = new Map(); // text → times delivered
  b.onMessage(({ src, payload }) => {
    assert.equal(src, a.addr, "src has no __i__ prefix");
    const key = typeof payload === "string" ? payload : "bin:" + Buffer.from(payload).toString("hex");
    bSeen.set(key, (bSeen.get(key) || 0) + 1);
    return typeof payload === "string" ? "re: " + payload : Uint8Array.from(payload).reverse();
  });
  const aSeen = new Map();
  a.onMessage(({ src, payload }) => {
    assert.equal(src, b.addr);
    aSeen.set(payload, (aSeen.get(payload) || 0) + 1);
    return null; // ACK from every sub-client
  });

  const N = 5;
  for (let i = 0; i < N; i++) {
    const r = await a.send(b.addr, "msg " + i);
    assert.equal(r, "re: msg " + i);
  }
  const rb = await a.send(b.addr, Uint8Array.from([1, 2, 3]));
  assert.deepEqual(Array.from(rb), [3, 2, 1]);
  // The other direction, answered by an ACK.
  const ra = await b.send(a.addr, "from b");
  assert.equal(ra, null);

  await sleep(1000); // late duplicates would show up here
  assert.equal(bSeen.size, N + 1);
  for (const [k, n] of bSeen) assert.equal(n, 1, `${k} delivered ${n} times`);
  assert.equal(aSeen.get("from b"), 1);
  console.log("ok", N + 2, "messages, each delivered once, replies and ACK received");
});
