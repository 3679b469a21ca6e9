// resi's Rust NKN Client ⇄ an SDK Client through resi's local NKN node.
//   node rust_peer.js <rpc addr> <address of the Rust client>
// Prints "ADDR <own address>" once connected, so the Rust side can send to
// it. Sends the Rust client a binary and a text request (encrypted) and
// checks its replies (reversed bytes / "rust: " + text); answers the Rust
// client's requests the same way (reversed bytes / "js: " + text); exits 0
// once it has answered two requests from the Rust client.
"use strict";
const { assert, nkn, rpcServerAddr, seed, sleep, connected, waitFor, bytesEqual, run } = require("./common");

run("rust_peer", async (clients) => {
  const rpc = rpcServerAddr();
  const rustAddr = process.argv[3];
  assert.ok(rustAddr, "usage: rust_peer.js <rpc> <rust address>");
  const js = new nkn.Client({ seed: seed(), identifier: "js", rpcServerAddr: rpc, responseTimeout: 15000 });
  clients.push(js);
  const fromRust = [];
  js.onMessage(({ src, payload, isEncrypted }) => {
    assert.equal(src, rustAddr);
    assert.equal(isEncrypted, true);
    fromRust.push(payload);
    return typeof payload === "string" ? "js: " + payload : Uint8Array.from(payload).reverse();
  });
  await connected(js, "js client");
  console.log("ADDR " + js.addr);

  const bin = Uint8Array.from([0, 1, 2, 3, 254, 255, 42]);
  const r1 = await js.send(rustAddr, bin);
  assert.ok(r1 instanceof Uint8Array, "binary reply from Rust");
  assert.ok(bytesEqual(r1, Uint8Array.from(bin).reverse()));
  console.log("ok js → rust binary, reply");
  const r2 = await js.send(rustAddr, "hello from js");
  assert.equal(r2, "rust: hello from js");
  console.log("ok js → rust text, reply");

  await waitFor(() => fromRust.length >= 2, 20000, "two requests from the Rust client");
  assert.ok(fromRust.some((p) => typeof p !== "string" && bytesEqual(p, [9, 8, 7, 0])));
  assert.ok(fromRust.includes("hello from rust"));
  await sleep(500); // let our replies go out
  console.log("ok rust → js binary and text answered");
});
