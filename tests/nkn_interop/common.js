// Shared helpers for the interop scripts. Each script is run as
//   node <script>.js <rpc address of resi's local NKN node>
// and exits 0 on success, non-zero on any failure or on the overall timeout.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const nkn = require("nkn-sdk");

function rpcServerAddr() {
  const arg = process.argv[2];
  if (!arg) {
    console.error("usage: node " + process.argv[1] + " <rpc host:port | http://host:port>");
    process.exit(2);
  }
  return arg.startsWith("http://") ? arg : "http://" + arg;
}

function seed() {
  return crypto.randomBytes(32).toString("hex");
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Resolves once `client.onConnect` fires (Client or MultiClient).
function connected(client, what, ms = 20000) {
  return withTimeout(
    new Promise((resolve) => client.onConnect(resolve)),
    ms,
    `${what} did not connect`,
  );
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms: ${what}`);
    await sleep(20);
  }
}

function bytesEqual(a, b) {
  return Buffer.from(a).equals(Buffer.from(b));
}

// Runs `main`, closes the listed clients, and exits with a status.
function run(name, main, { timeoutMs = 90000 } = {}) {
  const clients = [];
  const killer = setTimeout(() => {
    console.error(`FAIL ${name}: overall timeout ${timeoutMs} ms`);
    process.exit(3);
  }, timeoutMs);
  main(clients)
    .then(async () => {
      for (const c of clients) {
        try {
          await c.close();
        } catch (e) {}
      }
      clearTimeout(killer);
      console.log(`PASS ${name}`);
      process.exit(0);
    })
    .catch((e) => {
      console.error(`FAIL ${name}:`, e);
      process.exit(1);
    });
}

module.exports = { assert, nkn, rpcServerAddr, seed, sleep, connected, withTimeout, waitFor, bytesEqual, run };
