//! The embedded local NKN node: a small relay that implements the *node side*
//! of the NKN client protocol on loopback, so that NKN clients (resi's own and
//! the official SDKs, e.g. `nkn-sdk` 1.3.x for JavaScript) can exchange
//! messages on a machine with no network. Behaviour follows
//! `shared/docs/nkn-client-protocol.md` §11.2 ("Minimal local node").
//!
//! # What it does
//!
//! - **JSON-RPC 2.0 over HTTP POST, any path** ([`LocalNode::rpc_addr`]):
//!   `getwsaddr` and `getwssaddr` answer the node info (`addr`, `rpcAddr`,
//!   `pubkey`, `id`, `sdp`); `getnodestate` answers
//!   `syncState: "PERSIST_FINISHED"`; `getregistrant` answers "no
//!   registrant"; anything else is error `-42001` (INVALID METHOD). The reply
//!   is always HTTP 200 and echoes the request `id`.
//! - **WebSocket** ([`LocalNode::ws_addr`], any path, plain `ws://`): sends
//!   `authChallenge` at once, handles `setClient` (address check → 42002,
//!   Ed25519 signature over `sha256(challenge || salt)` → 42003), indexes
//!   sessions by `sha256(address)` (several sessions per address are allowed
//!   and all of them receive), pings every 8 s and drops a client that sends
//!   nothing (not even a pong) for 10 s.
//! - **OUTBOUND_MESSAGE**: zlib inflate (capped at 4 MiB), `dests`/`dest` and
//!   `payloads`/`payload` resolution, count checks, **verification of every
//!   per-destination signature** (§7.2, with this node's public key in the
//!   element); invalid ones are dropped and counted. Each valid destination
//!   gets an uncompressed INBOUND_MESSAGE with `src` = the sender's
//!   `setClient` address and a synthetic `prev_hash`
//!   `sha256(sig || VarBytes(node_id) || 00 || 00)`, so clients send receipts.
//! - **RECEIPT**: verified against the receiving client's key and counted.
//! - **Holding**: a message for an offline destination with
//!   `max_holding_seconds > 0` is kept (bounded by [`NodeConfig`]'s caps on
//!   seconds, message count and bytes) and delivered at that address's next
//!   `setClient`; with 0 it is dropped, as on the real network.
//! - **Loss knob** ([`NodeConfig::loss`], changed at run time with
//!   [`LocalNode::set_loss`]): drops that share of relayed messages (per
//!   destination), optionally from a fixed RNG seed; `1.0` is an outage.
//! - **Message faults** ([`MessageFaults`], set with
//!   [`LocalNode::set_faults`]): duplicate a share of the relayed messages,
//!   reorder a share (held back until the next message to the same client,
//!   or at most a second), and delay every message (with jitter, so delayed
//!   messages can overtake each other) — what a message path must survive.
//!
//! # Limits (by design)
//!
//! - A **single node**: no Chord ring, no node-to-node relay, never answers
//!   WRONG_NODE; every client ID is "ours".
//! - **No consensus, no blocks**: `sigChainBlockHash` is a fixed value
//!   derived from the node key and never changes (no
//!   `updateSigChainBlockHash` pushes).
//! - **No sig-chain mining**: signatures and receipts are verified and
//!   counted, then forgotten; `prev_hash` is synthetic.
//! - **No TLS and no WebRTC**: `getwssaddr` answers the plain address, so a
//!   client that insists on `wss://` will fail to connect. Node.js SDK
//!   clients use `ws://` by default.
//! - No names, subscriptions, wallets or transactions.
//! - Holding re-delivers nothing: the real node's 10 s re-check (§8.5) is
//!   not implemented; a held message is delivered once, at `setClient`.
//! - Stricter than the real node by default: a `setClient` without the
//!   challenge answer is refused ([`NodeConfig::require_client_auth`]); both
//!   SDKs always answer the challenge, which this node sends immediately.
//! - Binary frames before `setClient` are answered with an error text frame
//!   and ignored; a malformed frame (bad JSON, bad protobuf, bad zlib, over
//!   4 MiB) closes that client's connection only.
//!
//! # Layout
//!
//! [`Relay`] is the protocol logic with no sockets and no clock of its own:
//! it takes frames (and `now`) and returns [`Output`]s addressed to session
//! ids. [`LocalNode`] is the thin tokio layer: the hyper JSON-RPC server, the
//! tokio-tungstenite accept loop, one task per connection, and a 1 s timer
//! that expires held messages.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proto::nkn::{ClientMessage, ClientMessageType, CompressionType, InboundMessage, OutboundMessage, Receipt};

/// The node's websocket read limit and the cap on a decompressed inner
/// message (`MaxClientMessageSize` of the real node).
pub const MAX_CLIENT_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// The node pings every client this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(8);
/// A client that sends nothing (not even a pong) for this long is dropped.
pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed challenge check the connection is closed this much later
/// (the real node does the same, so the client can read the error first).
pub const AUTH_FAIL_CLOSE_DELAY: Duration = Duration::from_secs(3);
/// Frames queued for one connection before further relayed messages to it
/// are dropped (a client that does not read must not grow our memory).
const CONNECTION_QUEUE: usize = 1024;
/// Largest JSON-RPC request body accepted.
const MAX_RPC_BODY: usize = 64 * 1024;
/// Time allowed for a websocket handshake and for one frame write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// NKN node error codes used here (`api/common/errcode`). JSON-RPC errors
/// carry them negated.
pub mod errcode {
    pub const SUCCESS: i64 = 0;
    pub const INVALID_METHOD: i64 = 42001;
    pub const INVALID_PARAMS: i64 = 42002;
    pub const INVALID_SIGNATURE: i64 = 42003;
}

/// Configuration of a [`LocalNode`].
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// JSON-RPC listen address (loopback; port 0 picks a free port).
    pub rpc_listen: SocketAddr,
    /// WebSocket listen address (loopback; port 0 picks a free port).
    pub ws_listen: SocketAddr,
    /// The node's Ed25519 seed; random when `None`.
    pub seed: Option<[u8; 32]>,
    /// Test knob: probability in `[0, 1]` of dropping a relayed message
    /// (drawn once per destination of each outbound message).
    pub loss: f64,
    /// Seed of the loss RNG, for repeatable tests; from the OS when `None`.
    pub loss_seed: Option<u64>,
    /// Cap on how long an offline destination's message is held; the
    /// sender's `max_holding_seconds` is clipped to this. 0 disables holding.
    pub max_holding_seconds: u32,
    /// Cap on the number of messages held at once (over all destinations).
    pub max_held_messages: usize,
    /// Cap on the payload bytes held at once (over all destinations).
    pub max_held_bytes: usize,
    /// Refuse a `setClient` that does not answer the challenge (42003).
    /// The real node accepts such clients unauthenticated.
    pub require_client_auth: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        NodeConfig {
            rpc_listen: lo,
            ws_listen: lo,
            seed: None,
            loss: 0.0,
            loss_seed: None,
            max_holding_seconds: 3600,
            max_held_messages: 10_000,
            max_held_bytes: 64 * 1024 * 1024,
            require_client_auth: true,
        }
    }
}

/// Counters of a node. Totals since start unless marked as a gauge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// JSON-RPC requests answered.
    pub rpc_requests: u64,
    /// WebSocket connections accepted.
    pub ws_connections: u64,
    /// Gauge: websocket sessions whose `setClient` succeeded.
    pub clients_connected: u64,
    /// Successful `setClient`s.
    pub set_client_ok: u64,
    /// `setClient`s refused (bad address, bad or missing challenge answer).
    pub set_client_failed: u64,
    /// OUTBOUND_MESSAGE frames accepted (well-formed, counts consistent).
    pub outbound_messages: u64,
    /// Outbound messages refused: no destination, payload or signature
    /// count mismatch.
    pub invalid_messages: u64,
    /// Destinations whose address has no valid public key.
    pub invalid_destinations: u64,
    /// Per-destination signatures that failed verification (message dropped).
    pub bad_signatures: u64,
    /// INBOUND_MESSAGE frames handed to a destination connection
    /// (one per session; held messages count when delivered).
    pub relayed: u64,
    /// Dropped by the loss knob.
    pub dropped_loss: u64,
    /// Relayed twice by the duplication fault.
    pub duplicated: u64,
    /// Relayed after a later message by the reorder fault.
    pub reordered: u64,
    /// Relayed late by the delay fault.
    pub delayed: u64,
    /// Dropped: destination offline and no holding asked for (or allowed).
    pub dropped_offline: u64,
    /// Dropped: the holding caps (count or bytes) were reached.
    pub dropped_hold_full: u64,
    /// Dropped: the destination connection's send queue was full.
    pub dropped_queue_full: u64,
    /// Messages put on hold for an offline destination.
    pub held: u64,
    /// Gauge: messages on hold now.
    pub held_now: u64,
    /// Held messages delivered at a later `setClient`.
    pub held_delivered: u64,
    /// Held messages that expired undelivered.
    pub held_expired: u64,
    /// Receipts whose signature verified.
    pub receipts: u64,
    /// Receipts whose signature did not verify.
    pub bad_receipts: u64,
    /// Frames that closed their connection (bad JSON, protobuf, zlib, size).
    pub malformed_frames: u64,
    /// Binary frames refused because they came before `setClient`.
    pub rejected_before_set_client: u64,
}

/// Faults the node applies to the messages it relays (a test aid); all
/// off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MessageFaults {
    /// Share in `[0, 1]` of relayed messages delivered twice.
    pub duplicate: f64,
    /// Share in `[0, 1]` of relayed messages held back and delivered after
    /// the next message to the same connection (or at the next tick, at
    /// most a second later).
    pub reorder: f64,
    /// Every relayed message is delivered this late ...
    pub delay: Duration,
    /// ... plus a random `0..jitter` (so messages may overtake each other).
    pub jitter: Duration,
}

impl MessageFaults {
    fn clamped(mut self) -> MessageFaults {
        let share = |p: f64| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
        self.duplicate = share(self.duplicate);
        self.reorder = share(self.reorder);
        self
    }

    /// How late one message is delivered.
    fn lateness(&self) -> Duration {
        match self.jitter.is_zero() {
            true => self.delay,
            false => self.delay + self.jitter.mul_f64(rand::rng().random::<f64>()),
        }
    }
}

/// Identifies one websocket session inside a [`Relay`].
pub type SessionId = u64;

/// What the relay asks the transport to do for one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a JSON text frame.
    Text(String),
    /// Send a relayed INBOUND_MESSAGE (binary frame). Kept apart from other
    /// binary frames so the transport can count it as relayed.
    Inbound(Bytes),
    /// Close the connection after this delay (zero: now).
    Close { code: u16, reason: String, after: Duration },
}

/// A frame that ends its connection.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct Malformed(pub String);

struct ClientInfo {
    addr: String,
    id: [u8; 32],
    pubkey: VerifyingKey,
}

struct Session {
    challenge: [u8; 32],
    client: Option<ClientInfo>,
}

struct Held {
    frame: Bytes,
    expires: Instant,
}

/// The node's protocol logic, without sockets or a clock.
///
/// The transport calls [`Relay::connect`] for a new websocket, then
/// [`Relay::on_text`] / [`Relay::on_binary`] for each frame, and
/// [`Relay::disconnect`] when it ends; it sends the returned [`Output`]s to
/// the sessions they name. [`Relay::rpc`] answers a JSON-RPC request body.
pub struct Relay {
    pubkey: [u8; 32],
    node_id: [u8; 32],
    block_hash: [u8; 32],
    ws_addr: String,
    rpc_addr: String,
    cfg: NodeConfig,
    sessions: HashMap<SessionId, Session>,
    by_client: HashMap<[u8; 32], Vec<SessionId>>,
    held: HashMap<[u8; 32], VecDeque<Held>>,
    held_bytes: usize,
    loss_rng: StdRng,
    next_session: SessionId,
    stats: NodeStats,
    faults: MessageFaults,
    /// A message held back by the reorder fault, per connection.
    reordered: HashMap<SessionId, Bytes>,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

// The encodings and digests clients compute are shared with the client
// side (`wire`, `identity`): the node checks exactly what clients sign.
pub use super::identity::client_id;
use super::wire::put_var_bytes;
pub use super::wire::{auth_digest as challenge_digest, receipt_digest};

/// The public key of an NKN client address: the last dot-separated segment,
/// 64 hex characters, a valid Ed25519 point.
pub fn address_pubkey(addr: &str) -> Option<VerifyingKey> {
    let pk_hex = addr.rsplit('.').next()?;
    if pk_hex.len() != 64 {
        return None;
    }
    let bytes: [u8; 32] = hex::decode(pk_hex).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}


/// The digest a client signs for destination `dest` of an outbound message
/// (§7.2): `sha256(sha256(metadata) || 00 20 <node pubkey> 00)`.
#[allow(clippy::too_many_arguments)]
pub fn outbound_digest(
    nonce: u32,
    data_size: u32,
    block_hash: &[u8],
    src_addr: &str,
    src_pubkey: &[u8; 32],
    dest_addr: &str,
    dest_pubkey: &[u8; 32],
    node_pubkey: &[u8; 32],
) -> [u8; 32] {
    let mut meta = Vec::with_capacity(8 + 5 * 33);
    meta.extend_from_slice(&nonce.to_le_bytes());
    meta.extend_from_slice(&data_size.to_le_bytes());
    put_var_bytes(&mut meta, block_hash);
    put_var_bytes(&mut meta, &client_id(src_addr));
    put_var_bytes(&mut meta, src_pubkey);
    put_var_bytes(&mut meta, &client_id(dest_addr));
    put_var_bytes(&mut meta, dest_pubkey);
    let mut elem = Vec::with_capacity(35);
    put_var_bytes(&mut elem, &[]);
    put_var_bytes(&mut elem, node_pubkey);
    elem.push(0);
    sha256(&[&sha256(&[&meta]), &elem])
}



fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    match Signature::from_slice(sig) {
        Ok(sig) => key.verify(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

/// zlib (RFC 1950) inflate, refusing output over `cap` bytes.
fn inflate_capped(data: &[u8], cap: usize) -> Result<Vec<u8>, Malformed> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Malformed(format!("zlib: {e}")))?;
    if out.len() > cap {
        return Err(Malformed(format!("inflated message over {cap} bytes")));
    }
    Ok(out)
}

fn envelope(action: &str, error: i64, desc: &str, result: Value) -> String {
    json!({"Action": action, "Error": error, "Desc": desc, "Result": result, "Version": 1}).to_string()
}

impl Relay {
    /// A relay for a node whose websocket and RPC endpoints are `ws_addr`
    /// and `rpc_addr` (`host:port`, as advertised in node info).
    pub fn new(cfg: NodeConfig, ws_addr: String, rpc_addr: String) -> Relay {
        let seed = cfg.seed.unwrap_or_else(|| rand::rng().random());
        let pubkey = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        let loss_rng = match cfg.loss_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Relay {
            pubkey,
            node_id: sha256(&[b"resi local nkn node id", &pubkey]),
            block_hash: sha256(&[b"resi local nkn node block hash", &pubkey]),
            ws_addr,
            rpc_addr,
            cfg,
            sessions: HashMap::new(),
            by_client: HashMap::new(),
            held: HashMap::new(),
            held_bytes: 0,
            loss_rng,
            next_session: 1,
            stats: NodeStats::default(),
            faults: MessageFaults::default(),
            reordered: HashMap::new(),
        }
    }

    /// The node's Ed25519 public key.
    pub fn pubkey(&self) -> [u8; 32] {
        self.pubkey
    }

    /// The node's 32-byte ID (advertised, not used for routing).
    pub fn node_id(&self) -> [u8; 32] {
        self.node_id
    }

    /// The `sigChainBlockHash` handed to clients.
    pub fn block_hash(&self) -> [u8; 32] {
        self.block_hash
    }

    /// Changes the loss knob ([`NodeConfig::loss`]) from now on; `1.0`
    /// silences every client (an NKN outage), `0.0` ends it. Values are
    /// clamped to `[0, 1]`.
    pub fn set_loss(&mut self, loss: f64) {
        self.cfg.loss = if loss.is_nan() { 0.0 } else { loss.clamp(0.0, 1.0) };
    }

    /// The loss knob now.
    pub fn loss(&self) -> f64 {
        self.cfg.loss
    }

    /// Changes the message faults from now on (shares clamped to `[0, 1]`).
    pub fn set_faults(&mut self, faults: MessageFaults) {
        self.faults = faults.clamped();
        if self.faults.reorder == 0.0 {
            self.stats.reordered += self.reordered.len() as u64;
        }
    }

    /// The message faults now.
    pub fn faults(&self) -> MessageFaults {
        self.faults
    }

    /// Messages the reorder fault still holds back, to deliver now (the
    /// transport calls this about once a second, so none waits longer).
    pub fn release_reordered(&mut self) -> Vec<(SessionId, Output)> {
        let held: Vec<_> = self.reordered.drain().map(|(sid, f)| (sid, Output::Inbound(f))).collect();
        self.stats.reordered += held.len() as u64;
        held
    }

    /// Queues one relayed message for connection `sid`, through the
    /// duplicate and reorder faults.
    fn relay_to(&mut self, sid: SessionId, frame: Bytes, out: &mut Vec<(SessionId, Output)>) {
        let held = self.reordered.remove(&sid);
        if held.is_none() && self.faults.reorder > 0.0 && self.loss_rng.random::<f64>() < self.faults.reorder {
            self.reordered.insert(sid, frame);
            return;
        }
        if self.faults.duplicate > 0.0 && self.loss_rng.random::<f64>() < self.faults.duplicate {
            self.stats.duplicated += 1;
            out.push((sid, Output::Inbound(frame.clone())));
        }
        out.push((sid, Output::Inbound(frame)));
        if let Some(prev) = held {
            self.stats.reordered += 1;
            out.push((sid, Output::Inbound(prev)));
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NodeStats {
        let mut s = self.stats;
        s.clients_connected = self.sessions.values().filter(|s| s.client.is_some()).count() as u64;
        s.held_now = self.held.values().map(|q| q.len() as u64).sum();
        s
    }

    /// Counters the transport updates (queue overflow, delivered frames).
    pub fn stats_mut(&mut self) -> &mut NodeStats {
        &mut self.stats
    }

    /// The node info object of `getwsaddr` and `setClient` (§2).
    pub fn node_info(&self) -> Value {
        json!({
            "addr": self.ws_addr,
            "rpcAddr": self.rpc_addr,
            "pubkey": hex::encode(self.pubkey),
            "id": hex::encode(self.node_id),
            "sdp": "",
        })
    }

    /// Answers one JSON-RPC request body (any method and path; §11.2 item 1).
    pub fn rpc(&mut self, body: &[u8]) -> Value {
        self.stats.rpc_requests += 1;
        let req: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return json!({"jsonrpc": "2.0", "id": null,
                    "error": {"code": -32700, "message": "PARSE ERROR", "data": null}})
            }
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let method = req.get("method").and_then(Value::as_str).unwrap_or("");
        let result = match method {
            "getwsaddr" | "getwssaddr" => Some(self.node_info()),
            "getnodestate" => Some(json!({
                "addr": self.ws_addr,
                "id": hex::encode(self.node_id),
                "publicKey": hex::encode(self.pubkey),
                "syncState": "PERSIST_FINISHED",
                "height": 0,
                "version": concat!("resi-local-node-", env!("CARGO_PKG_VERSION")),
                "jsonRpcPort": port_of(&self.rpc_addr),
                "websocketPort": port_of(&self.ws_addr),
                "relayMessageCount": self.stats.relayed,
            })),
            "getregistrant" => Some(json!({"registrant": "", "expiresAt": 0})),
            _ => None,
        };
        match result {
            Some(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            None => json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -errcode::INVALID_METHOD, "message": "INVALID METHOD", "data": null}}),
        }
    }

    /// A new websocket session: its id and the `authChallenge` to send.
    pub fn connect(&mut self, challenge: [u8; 32]) -> (SessionId, Output) {
        let sid = self.next_session;
        self.next_session += 1;
        self.stats.ws_connections += 1;
        self.sessions.insert(
            sid,
            Session {
                challenge,
                client: None,
            },
        );
        let frame = json!({"Action": "authChallenge", "Challenge": hex::encode(challenge),
            "Error": 0, "Desc": "SUCCESS", "Result": "", "Version": 1});
        (sid, Output::Text(frame.to_string()))
    }

    /// The websocket session ended.
    pub fn disconnect(&mut self, sid: SessionId) {
        self.reordered.remove(&sid);
        if let Some(s) = self.sessions.remove(&sid) {
            if let Some(c) = s.client {
                self.unindex(sid, &c.id);
            }
        }
    }

    fn unindex(&mut self, sid: SessionId, id: &[u8; 32]) {
        if let Some(v) = self.by_client.get_mut(id) {
            v.retain(|s| *s != sid);
            if v.is_empty() {
                self.by_client.remove(id);
            }
        }
    }

    /// A text (JSON) frame from session `sid`.
    pub fn on_text(&mut self, sid: SessionId, text: &str, now: Instant) -> Result<Vec<(SessionId, Output)>, Malformed> {
        let msg: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                self.stats.malformed_frames += 1;
                return Err(Malformed("text frame is not a JSON object".into()));
            }
        };
        let action = msg.get("Action").and_then(Value::as_str).unwrap_or("");
        match action {
            "setClient" => Ok(self.set_client(sid, &msg, now)),
            _ => Ok(vec![(
                sid,
                Output::Text(envelope(action, errcode::INVALID_METHOD, "INVALID METHOD", Value::Null)),
            )]),
        }
    }

    fn set_client(&mut self, sid: SessionId, msg: &Value, now: Instant) -> Vec<(SessionId, Output)> {
        let Some(challenge) = self.sessions.get(&sid).map(|s| s.challenge) else {
            return vec![];
        };
        let fail = |relay: &mut Relay, code: i64, desc: &str, close: bool| {
            relay.stats.set_client_failed += 1;
            let mut out = vec![(sid, Output::Text(envelope("setClient", code, desc, Value::Null)))];
            if close {
                out.push((
                    sid,
                    Output::Close {
                        code: 1008,
                        reason: desc.to_string(),
                        after: AUTH_FAIL_CLOSE_DELAY,
                    },
                ));
            }
            out
        };
        let addr = msg.get("Addr").and_then(Value::as_str).unwrap_or("");
        let Some(pubkey) = address_pubkey(addr) else {
            return fail(
                self,
                errcode::INVALID_PARAMS,
                "INVALID PARAMS: bad client address",
                false,
            );
        };
        let salt = msg.get("ClientSalt").and_then(Value::as_str);
        let sig = msg.get("Signature").and_then(Value::as_str);
        match (salt, sig) {
            (Some(salt), Some(sig)) => {
                let ok = match (hex::decode(salt), hex::decode(sig)) {
                    (Ok(salt), Ok(sig)) => verify(&pubkey, &challenge_digest(&challenge, &salt), &sig),
                    _ => false,
                };
                if !ok {
                    return fail(self, errcode::INVALID_SIGNATURE, "INVALID SIGNATURE", true);
                }
            }
            _ if self.cfg.require_client_auth => {
                return fail(
                    self,
                    errcode::INVALID_SIGNATURE,
                    "INVALID SIGNATURE: challenge not answered",
                    true,
                );
            }
            _ => {}
        }
        let id = client_id(addr);
        let old = self.sessions.get_mut(&sid).and_then(|s| s.client.take());
        if let Some(old) = old {
            self.unindex(sid, &old.id);
        }
        if let Some(s) = self.sessions.get_mut(&sid) {
            s.client = Some(ClientInfo {
                addr: addr.to_string(),
                id,
                pubkey,
            });
        }
        let list = self.by_client.entry(id).or_default();
        if !list.contains(&sid) {
            list.push(sid);
        }
        self.stats.set_client_ok += 1;
        let result = json!({"node": self.node_info(), "sigChainBlockHash": hex::encode(self.block_hash)});
        let mut out = vec![(
            sid,
            Output::Text(envelope("setClient", errcode::SUCCESS, "SUCCESS", result)),
        )];
        if let Some(q) = self.held.remove(&id) {
            for h in q {
                self.held_bytes -= h.frame.len();
                if h.expires <= now {
                    self.stats.held_expired += 1;
                } else {
                    self.stats.held_delivered += 1;
                    out.push((sid, Output::Inbound(h.frame)));
                }
            }
        }
        out
    }

    /// A binary (protobuf `ClientMessage`) frame from session `sid`.
    pub fn on_binary(
        &mut self,
        sid: SessionId,
        frame: Bytes,
        now: Instant,
    ) -> Result<Vec<(SessionId, Output)>, Malformed> {
        let r = self.on_binary_inner(sid, frame, now);
        if r.is_err() {
            self.stats.malformed_frames += 1;
        }
        r
    }

    fn on_binary_inner(
        &mut self,
        sid: SessionId,
        frame: Bytes,
        now: Instant,
    ) -> Result<Vec<(SessionId, Output)>, Malformed> {
        let Some(Some(sender)) = self.sessions.get(&sid).map(|s| s.client.as_ref()) else {
            self.stats.rejected_before_set_client += 1;
            let e = envelope(
                "",
                errcode::INVALID_PARAMS,
                "INVALID PARAMS: setClient first",
                Value::Null,
            );
            return Ok(vec![(sid, Output::Text(e))]);
        };
        let (src_addr, src_pubkey) = (sender.addr.clone(), sender.pubkey);
        if frame.len() > MAX_CLIENT_MESSAGE_SIZE {
            return Err(Malformed("frame over 4 MiB".into()));
        }
        let msg = ClientMessage::decode(frame).map_err(|e| Malformed(format!("ClientMessage: {e}")))?;
        let inner: Bytes = match CompressionType::try_from(msg.compression_type) {
            Ok(CompressionType::CompressionNone) => msg.message,
            Ok(CompressionType::CompressionZlib) => inflate_capped(&msg.message, MAX_CLIENT_MESSAGE_SIZE)?.into(),
            Err(_) => return Err(Malformed(format!("unknown compression {}", msg.compression_type))),
        };
        match ClientMessageType::try_from(msg.message_type) {
            Ok(ClientMessageType::OutboundMessage) => {
                let out = OutboundMessage::decode(inner).map_err(|e| Malformed(format!("OutboundMessage: {e}")))?;
                Ok(self.outbound(&src_addr, &src_pubkey, out, now))
            }
            Ok(ClientMessageType::Receipt) => {
                let r = Receipt::decode(inner).map_err(|e| Malformed(format!("Receipt: {e}")))?;
                if verify(&src_pubkey, &receipt_digest(&r.prev_hash), &r.signature) {
                    self.stats.receipts += 1;
                } else {
                    self.stats.bad_receipts += 1;
                }
                Ok(vec![])
            }
            _ => Err(Malformed(format!(
                "unexpected client message type {}",
                msg.message_type
            ))),
        }
    }

    fn outbound(
        &mut self,
        src_addr: &str,
        src_pubkey: &VerifyingKey,
        msg: OutboundMessage,
        now: Instant,
    ) -> Vec<(SessionId, Output)> {
        let dests = if msg.dests.is_empty() && !msg.dest.is_empty() {
            vec![msg.dest]
        } else {
            msg.dests
        };
        let payloads = if msg.payloads.is_empty() {
            vec![msg.payload]
        } else {
            msg.payloads
        };
        if dests.is_empty()
            || (payloads.len() != 1 && payloads.len() != dests.len())
            || msg.signatures.len() != dests.len()
        {
            self.stats.invalid_messages += 1;
            return vec![];
        }
        self.stats.outbound_messages += 1;
        let src_pk = src_pubkey.to_bytes();
        let hold_secs = msg.max_holding_seconds.min(self.cfg.max_holding_seconds);
        let mut out = Vec::new();
        for (i, dest) in dests.iter().enumerate() {
            let Some(dest_pk) = address_pubkey(dest) else {
                self.stats.invalid_destinations += 1;
                continue;
            };
            let payload = if payloads.len() == 1 {
                &payloads[0]
            } else {
                &payloads[i]
            };
            let sig = &msg.signatures[i];
            let digest = outbound_digest(
                msg.nonce,
                payload.len() as u32,
                &msg.block_hash,
                src_addr,
                &src_pk,
                dest,
                &dest_pk.to_bytes(),
                &self.pubkey,
            );
            if !verify(src_pubkey, &digest, sig) {
                self.stats.bad_signatures += 1;
                continue;
            }
            if self.cfg.loss > 0.0 && self.loss_rng.random::<f64>() < self.cfg.loss {
                self.stats.dropped_loss += 1;
                continue;
            }
            // Synthetic relay hash (§11.2 item 5): the hash the real node
            // would chain after the sender's element, with our node ID.
            let mut chained = Vec::with_capacity(64 + 33 + 2);
            chained.extend_from_slice(sig);
            put_var_bytes(&mut chained, &self.node_id);
            chained.extend_from_slice(&[0, 0]);
            let inbound = InboundMessage {
                src: src_addr.to_string(),
                payload: payload.clone(),
                prev_hash: Bytes::copy_from_slice(&sha256(&[&chained])),
            };
            let frame: Bytes = ClientMessage {
                message_type: ClientMessageType::InboundMessage as i32,
                message: inbound.encode_to_vec().into(),
                compression_type: CompressionType::CompressionNone as i32,
            }
            .encode_to_vec()
            .into();
            let id = client_id(dest);
            match self.by_client.get(&id) {
                Some(sids) if !sids.is_empty() => {
                    for sid in sids.clone() {
                        self.relay_to(sid, frame.clone(), &mut out);
                    }
                }
                _ if hold_secs > 0 => self.hold(id, frame, now + Duration::from_secs(hold_secs.into()), now),
                _ => self.stats.dropped_offline += 1,
            }
        }
        out
    }

    fn hold(&mut self, id: [u8; 32], frame: Bytes, expires: Instant, now: Instant) {
        let full = |r: &Relay| {
            r.stats().held_now as usize >= r.cfg.max_held_messages || r.held_bytes + frame.len() > r.cfg.max_held_bytes
        };
        if full(self) {
            self.expire(now);
        }
        if full(self) {
            self.stats.dropped_hold_full += 1;
            return;
        }
        self.held_bytes += frame.len();
        self.stats.held += 1;
        self.held.entry(id).or_default().push_back(Held { frame, expires });
    }

    /// Drops held messages whose time is up. Call about once a second.
    pub fn expire(&mut self, now: Instant) {
        let mut expired = 0;
        let mut freed = 0;
        self.held.retain(|_, q| {
            q.retain(|h| {
                let keep = h.expires > now;
                if !keep {
                    expired += 1;
                    freed += h.frame.len();
                }
                keep
            });
            !q.is_empty()
        });
        self.stats.held_expired += expired;
        self.held_bytes -= freed;
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// The relay plus the send queues of the live connections.
struct Shared {
    relay: Relay,
    conns: HashMap<SessionId, mpsc::Sender<Output>>,
}

impl Shared {
    /// Queues outputs to their sessions; a full queue drops a relayed
    /// message (counted) and closes nothing.
    fn dispatch(&mut self, outs: Vec<(SessionId, Output)>) {
        let faults = self.relay.faults();
        for (sid, o) in outs {
            let Some(tx) = self.conns.get(&sid) else {
                continue;
            };
            let relayed = matches!(o, Output::Inbound(_));
            if relayed && !(faults.delay.is_zero() && faults.jitter.is_zero()) {
                // Delivered late by a task of its own; a full queue then
                // drops it like any other.
                let (tx, late) = (tx.clone(), faults.lateness());
                self.relay.stats.delayed += 1;
                self.relay.stats.relayed += 1;
                tokio::spawn(async move {
                    tokio::time::sleep(late).await;
                    let _ = tx.try_send(o);
                });
                continue;
            }
            match tx.try_send(o) {
                Ok(()) if relayed => self.relay.stats.relayed += 1,
                Ok(()) => {}
                Err(_) if relayed => self.relay.stats.dropped_queue_full += 1,
                Err(_) => {}
            }
        }
    }
}

/// A running local NKN node on the current tokio runtime.
pub struct LocalNode {
    shared: Arc<Mutex<Shared>>,
    rpc_addr: SocketAddr,
    ws_addr: SocketAddr,
    pubkey: [u8; 32],
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl LocalNode {
    /// Binds both listeners and starts serving.
    pub async fn start(cfg: NodeConfig) -> std::io::Result<LocalNode> {
        let rpc_listener = TcpListener::bind(cfg.rpc_listen).await?;
        let ws_listener = TcpListener::bind(cfg.ws_listen).await?;
        let rpc_addr = rpc_listener.local_addr()?;
        let ws_addr = ws_listener.local_addr()?;
        let relay = Relay::new(cfg, ws_addr.to_string(), rpc_addr.to_string());
        let pubkey = relay.pubkey();
        let shared = Arc::new(Mutex::new(Shared {
            relay,
            conns: HashMap::new(),
        }));
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();

        tasks.spawn(rpc_accept_loop(
            rpc_listener,
            shared.clone(),
            cancel.clone(),
            tasks.clone(),
        ));
        tasks.spawn(ws_accept_loop(
            ws_listener,
            shared.clone(),
            cancel.clone(),
            tasks.clone(),
        ));
        let (s, c) = (shared.clone(), cancel.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = c.cancelled() => break,
                    _ = tick.tick() => {
                        let mut g = lock(&s);
                        g.relay.expire(Instant::now());
                        let held = g.relay.release_reordered();
                        g.dispatch(held);
                    }
                }
            }
        });
        tracing::info!(%rpc_addr, %ws_addr, pubkey = %hex::encode(pubkey), "local NKN node started");
        Ok(LocalNode {
            shared,
            rpc_addr,
            ws_addr,
            pubkey,
            cancel,
            tasks,
        })
    }

    /// The JSON-RPC address; clients use `http://<rpc_addr>` as seed.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// `http://<rpc_addr>`, the value for the SDK's `rpcServerAddr`.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr)
    }

    /// The websocket address (`ws://<ws_addr>`).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// The node's Ed25519 public key.
    pub fn pubkey(&self) -> [u8; 32] {
        self.pubkey
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NodeStats {
        lock(&self.shared).relay.stats()
    }

    /// Changes the loss knob of the running node ([`Relay::set_loss`]).
    pub fn set_loss(&self, loss: f64) {
        lock(&self.shared).relay.set_loss(loss);
    }

    /// The loss knob now.
    pub fn loss(&self) -> f64 {
        lock(&self.shared).relay.loss()
    }

    /// Changes the message faults of the running node ([`MessageFaults`]).
    pub fn set_faults(&self, faults: MessageFaults) {
        lock(&self.shared).relay.set_faults(faults);
    }

    /// The message faults now.
    pub fn faults(&self) -> MessageFaults {
        lock(&self.shared).relay.faults()
    }

    /// The `sigChainBlockHash` handed to clients.
    pub fn block_hash(&self) -> [u8; 32] {
        lock(&self.shared).relay.block_hash()
    }

    /// Stops accepting, closes every connection and waits for all tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn lock(s: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The next accepted connection, or `None` once `cancel` fires. Accept
/// errors (e.g. out of file descriptors) are logged and retried.
async fn accept_or_cancel(listener: &TcpListener, cancel: &CancellationToken, what: &str) -> Option<TcpStream> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            r = listener.accept() => match r {
                Ok((s, _)) => return Some(s),
                Err(e) => {
                    tracing::warn!("NKN node {what} accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn rpc_accept_loop(
    listener: TcpListener,
    shared: Arc<Mutex<Shared>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    while let Some(stream) = accept_or_cancel(&listener, &cancel, "RPC").await {
        let (shared, cancel) = (shared.clone(), cancel.clone());
        tasks.spawn(async move {
            let svc = service_fn(move |req| rpc_handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = conn => if let Err(e) = r { tracing::debug!("NKN node RPC connection: {e}") },
            }
        });
    }
}

async fn rpc_handle(
    shared: Arc<Mutex<Shared>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            http::HeaderValue::from_static("*"),
        );
        Ok(r)
    };
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new());
    }
    let body = match Limited::new(req.into_body(), MAX_RPC_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::PAYLOAD_TOO_LARGE, Bytes::new()),
    };
    let answer = lock(&shared).relay.rpc(&body);
    reply(StatusCode::OK, Bytes::from(answer.to_string()))
}

async fn ws_accept_loop(
    listener: TcpListener,
    shared: Arc<Mutex<Shared>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    while let Some(stream) = accept_or_cancel(&listener, &cancel, "websocket").await {
        let _ = stream.set_nodelay(true);
        tasks.spawn(ws_connection(stream, shared.clone(), cancel.clone()));
    }
}

/// One websocket client: moves frames between the socket and the relay.
async fn ws_connection(stream: TcpStream, shared: Arc<Mutex<Shared>>, cancel: CancellationToken) {
    let cfg = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE_SIZE));
    let ws = tokio::select! {
        _ = cancel.cancelled() => return,
        r = tokio::time::timeout(IO_TIMEOUT, tokio_tungstenite::accept_async_with_config(stream, Some(cfg))) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => { tracing::debug!("NKN node websocket handshake: {e}"); return; }
            Err(_) => return,
        },
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Output>(CONNECTION_QUEUE);
    let sid = {
        let mut g = lock(&shared);
        let (sid, hello) = g.relay.connect(rand::rng().random());
        g.conns.insert(sid, tx);
        g.dispatch(vec![(sid, hello)]);
        sid
    };
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
    let mut deadline = tokio::time::Instant::now() + PONG_TIMEOUT;
    let mut close_at: Option<(tokio::time::Instant, CloseFrame)> = None;
    let close_frame = |code: u16, reason: &str| CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_string().into(),
    };

    let final_close: Option<CloseFrame> = loop {
        let close_sleep = async {
            match &close_at {
                Some((t, _)) => tokio::time::sleep_until(*t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break Some(close_frame(1001, "node shutting down")),
            _ = tokio::time::sleep_until(deadline) => break Some(close_frame(1000, "pong timeout")),
            _ = close_sleep => break close_at.take().map(|(_, f)| f),
            _ = ping.tick() => {
                if !matches!(tokio::time::timeout(IO_TIMEOUT, sink.send(WsMessage::Ping(Bytes::new()))).await, Ok(Ok(()))) {
                    break None;
                }
            }
            out = rx.recv() => {
                let msg = match out {
                    Some(Output::Text(t)) => WsMessage::text(t),
                    Some(Output::Inbound(b)) => WsMessage::Binary(b),
                    Some(Output::Close { code, reason, after }) => {
                        let f = close_frame(code, &reason);
                        if after.is_zero() { break Some(f); }
                        close_at = Some((tokio::time::Instant::now() + after, f));
                        continue;
                    }
                    None => break None,
                };
                if !matches!(tokio::time::timeout(IO_TIMEOUT, sink.send(msg)).await, Ok(Ok(()))) {
                    break None;
                }
            }
            frame = source.next() => {
                deadline = tokio::time::Instant::now() + PONG_TIMEOUT;
                let now = Instant::now();
                let r = match frame {
                    Some(Ok(WsMessage::Text(t))) => { let mut g = lock(&shared); g.relay.on_text(sid, t.as_str(), now).map(|o| g.dispatch(o)) }
                    Some(Ok(WsMessage::Binary(b))) => { let mut g = lock(&shared); g.relay.on_binary(sid, b, now).map(|o| g.dispatch(o)) }
                    Some(Ok(WsMessage::Close(_))) | None => break None,
                    Some(Ok(_)) => Ok(()), // ping (answered by tungstenite), pong
                    Some(Err(e)) => {
                        // Oversize or otherwise invalid websocket framing.
                        tracing::debug!("NKN node websocket read: {e}");
                        lock(&shared).relay.stats_mut().malformed_frames += 1;
                        break Some(close_frame(1009, "bad frame"));
                    }
                };
                if let Err(e) = r {
                    tracing::debug!("NKN node session {sid}: {e}");
                    break Some(close_frame(1002, "malformed frame"));
                }
            }
        }
    };
    {
        let mut g = lock(&shared);
        g.conns.remove(&sid);
        g.relay.disconnect(sid);
    }
    if let Some(f) = final_close {
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(WsMessage::Close(Some(f)))).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(out: &[(SessionId, Output)]) -> Vec<(SessionId, &[u8])> {
        out.iter()
            .map(|(sid, o)| match o {
                Output::Inbound(b) => (*sid, &b[..]),
                other => panic!("not a relayed message: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn message_faults_reorder_and_duplicate_what_is_relayed() {
        let mut r = Relay::new(NodeConfig::default(), "127.0.0.1:1".into(), "127.0.0.1:2".into());
        let mut out = Vec::new();
        r.relay_to(1, Bytes::from_static(b"plain"), &mut out);
        assert_eq!(inbound(&out), vec![(1, &b"plain"[..])]);

        // Reorder: the first is held back and goes after the second.
        r.set_faults(MessageFaults { reorder: 1.0, ..MessageFaults::default() });
        out.clear();
        r.relay_to(1, Bytes::from_static(b"m1"), &mut out);
        assert!(out.is_empty());
        r.relay_to(1, Bytes::from_static(b"m2"), &mut out);
        assert_eq!(inbound(&out), vec![(1, &b"m2"[..]), (1, &b"m1"[..])]);
        // Held per connection; the tick releases what waits.
        out.clear();
        r.relay_to(2, Bytes::from_static(b"other"), &mut out);
        assert!(out.is_empty());
        assert_eq!(inbound(&r.release_reordered()), vec![(2, &b"other"[..])]);
        assert_eq!(r.stats().reordered, 2);

        // Duplicate: twice, back to back.
        r.set_faults(MessageFaults { duplicate: 1.0, ..MessageFaults::default() });
        out.clear();
        r.relay_to(1, Bytes::from_static(b"d"), &mut out);
        assert_eq!(inbound(&out), vec![(1, &b"d"[..]), (1, &b"d"[..])]);
        assert_eq!(r.stats().duplicated, 1);

        // Shares are clamped; off again.
        r.set_faults(MessageFaults { duplicate: 3.0, reorder: f64::NAN, ..MessageFaults::default() });
        assert_eq!((r.faults().duplicate, r.faults().reorder), (1.0, 0.0));
        r.set_faults(MessageFaults::default());
        out.clear();
        r.relay_to(1, Bytes::from_static(b"p"), &mut out);
        assert_eq!(inbound(&out), vec![(1, &b"p"[..])]);
    }

    #[test]
    fn loss_knob_changes_at_run_time_within_bounds() {
        let mut r = Relay::new(NodeConfig::default(), "127.0.0.1:1".into(), "127.0.0.1:2".into());
        assert_eq!(r.loss(), 0.0);
        r.set_loss(1.0);
        assert_eq!(r.loss(), 1.0);
        r.set_loss(7.0);
        assert_eq!(r.loss(), 1.0);
        r.set_loss(-1.0);
        assert_eq!(r.loss(), 0.0);
        r.set_loss(f64::NAN);
        assert_eq!(r.loss(), 0.0);
    }

    #[test]
    fn outbound_digest_matches_spec_vector() {
        // §12.5: src __0__.<A>, dest __0__.<B>, node pubkey = B, block hash aa×32,
        // nonce 0x12345678, payload of 67 bytes.
        let a = "f444c54d74e46fd8499696fcade6bc778908a978db7a229de496b94e1d66f9bf";
        let b = "4cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29";
        let pa: [u8; 32] = hex::decode(a).unwrap().try_into().unwrap();
        let pb: [u8; 32] = hex::decode(b).unwrap().try_into().unwrap();
        let d = outbound_digest(
            0x12345678,
            67,
            &[0xaa; 32],
            &format!("__0__.{a}"),
            &pa,
            &format!("__0__.{b}"),
            &pb,
            &pb,
        );
        assert_eq!(
            hex::encode(d),
            "66bf8a30941064eedb13ef48a44c46b6dccd6f90d90e05c306afa18b2c0e1a43"
        );
        let sig = hex::decode("4dd31efb44fb3451384d65e9064e8cd5abcea4fd3d2f4cf23c75d6889ffbd269b2ca23c8fa7931c8ec3d361e8af3ea159e7b9d3e18f2d002ce8fad82a0f94100").unwrap();
        assert!(verify(&VerifyingKey::from_bytes(&pa).unwrap(), &d, &sig));
    }

    #[test]
    fn receipt_and_challenge_vectors() {
        let pb: [u8; 32] = hex::decode("4cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29")
            .unwrap()
            .try_into()
            .unwrap();
        let sig = hex::decode("b1aba8f3d9bada8af78f07eed9e0a4fa6c9110f43bd2911cf9b0c12796d05b2df34212efba7f695d51d81d1aeba7354e74bf82839cdc98f9b35c127f3060e207").unwrap();
        assert!(verify(
            &VerifyingKey::from_bytes(&pb).unwrap(),
            &receipt_digest(&[0xbb; 32]),
            &sig
        ));

        let d = challenge_digest(&[0xcc; 32], &[0xdd; 32]);
        assert_eq!(
            hex::encode(d),
            "5855266bbab10ac48bbac9b714edf3239b2e7d572a6a9f6d1da0a53cbfa7be0e"
        );
        let pa: [u8; 32] = hex::decode("f444c54d74e46fd8499696fcade6bc778908a978db7a229de496b94e1d66f9bf")
            .unwrap()
            .try_into()
            .unwrap();
        let sig = hex::decode("6d44345f7256d8c312bedc702a7b2aec94b7f65bfd5cc4f66477ab54a15a4793850931896d0613371955cc6fcb15864f05ad1b4378039f938cbe0e2f1da81700").unwrap();
        assert!(verify(&VerifyingKey::from_bytes(&pa).unwrap(), &d, &sig));
    }

    #[test]
    fn var_bytes_lengths() {
        let mut v = Vec::new();
        put_var_bytes(&mut v, &[]);
        assert_eq!(v, [0]);
        let mut v = Vec::new();
        put_var_bytes(&mut v, &[7u8; 0xfd]);
        assert_eq!(&v[..3], &[0xfd, 0xfd, 0x00]);
        assert_eq!(v.len(), 3 + 0xfd);
    }

    #[test]
    fn address_parsing() {
        let pk = "4cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29";
        assert!(address_pubkey(pk).is_some());
        assert!(address_pubkey(&format!("__1__.gw.a.{pk}")).is_some());
        assert!(address_pubkey(&format!("{pk}.x")).is_none());
        assert!(address_pubkey("nope").is_none());
        assert_eq!(
            hex::encode(client_id(
                "__0__.f444c54d74e46fd8499696fcade6bc778908a978db7a229de496b94e1d66f9bf"
            )),
            "18b05cb58f4b78910eadef39c50fbcbcb5dfbf3bb5c95d84f04c27bf3b3d19d3"
        );
    }

    #[test]
    fn rpc_methods() {
        let mut r = Relay::new(NodeConfig::default(), "127.0.0.1:1".into(), "127.0.0.1:2".into());
        let a = r.rpc(br#"{"jsonrpc":"2.0","id":"nkn-sdk-js","method":"getwsaddr","params":{"address":"x"}}"#);
        assert_eq!(a["id"], "nkn-sdk-js");
        assert_eq!(a["result"]["addr"], "127.0.0.1:1");
        assert_eq!(a["result"]["rpcAddr"], "127.0.0.1:2");
        assert_eq!(a["result"]["pubkey"], hex::encode(r.pubkey()));
        let s = r.rpc(br#"{"jsonrpc":"2.0","id":7,"method":"getnodestate","params":{}}"#);
        assert_eq!(s["id"], 7);
        assert_eq!(s["result"]["syncState"], "PERSIST_FINISHED");
        let e = r.rpc(br#"{"jsonrpc":"2.0","id":1,"method":"getbalancebyaddr","params":{}}"#);
        assert_eq!(e["error"]["code"], -42001);
        assert!(e.get("result").is_none());
        assert!(r.rpc(b"not json")["error"].is_object());
    }
}
