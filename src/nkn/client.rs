//! One NKN client: discovery → WebSocket → `authChallenge` → `setClient`,
//! then binary `ClientMessage` frames; reconnects with backoff (§3, §8).
//!
//! The protocol decisions live in pure functions ([`build_send_frame`],
//! [`process_inbound`]) and in [`super::wire`]; the task that owns the
//! socket only moves frames.
//!
//! Answers follow the Go SDK: nothing is ACKed automatically, the
//! application calls [`Client::reply`] (with `None` for an ACK).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::identity::{Address, Identity};
use super::payload;
use super::rpc;
use super::wire::{self, NodeInfo, NodeJson, Outbound, SetClient};
use super::{crypto, NknError, Result, MAX_CLIENT_MESSAGE};
use crate::proto::nkn::payloads::{Payload, PayloadType};
use crate::proto::nkn::InboundMessage;

/// Configuration of one client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Identifier: the address is `identifier.pubkeyhex` (or just the key).
    pub identifier: String,
    /// Seed RPC servers (`http://host:port[/path]`), tried in random order.
    pub seed_rpc_servers: Vec<String>,
    /// Timeout of one RPC call.
    pub rpc_timeout: Duration,
    /// Timeout of the WebSocket connect and handshake.
    pub connect_timeout: Duration,
    /// How long to wait for `authChallenge` before `setClient` (5 s).
    pub challenge_timeout: Duration,
    /// How long to wait for the `setClient` reply.
    pub set_client_timeout: Duration,
    /// First reconnect delay; doubles on every failed attempt.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Interval of our own WebSocket pings (Go SDK: 8 s).
    pub ping_interval: Duration,
    /// The connection is dropped when nothing arrives for this long (10 s).
    pub read_timeout: Duration,
    /// Timeout of one WebSocket write.
    pub write_timeout: Duration,
    /// Accept unencrypted messages (they can be forged by the node).
    pub allow_unencrypted: bool,
    /// Capacity of the receive channel; arrivals beyond it are dropped.
    pub channel_capacity: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            identifier: String::new(),
            seed_rpc_servers: rpc::DEFAULT_SEED_RPC_SERVERS.iter().map(|s| s.to_string()).collect(),
            rpc_timeout: rpc::DEFAULT_RPC_TIMEOUT,
            connect_timeout: Duration::from_secs(5),
            challenge_timeout: Duration::from_secs(5),
            set_client_timeout: Duration::from_secs(10),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(64),
            ping_interval: Duration::from_secs(8),
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            allow_unencrypted: false,
            channel_capacity: 1024,
        }
    }
}

/// Per-message options.
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Encrypt end to end (default true).
    pub encrypt: bool,
    /// `max_holding_seconds`: how long the node may hold the message for an
    /// offline destination (0: drop).
    pub max_holding: u32,
    /// Tell the receiver not to answer.
    pub no_reply: bool,
    /// Send as TEXT (`data` must be UTF-8) instead of BINARY.
    pub text: bool,
    /// Use this 8-byte message ID instead of a random one.
    pub message_id: Option<Bytes>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions { encrypt: true, max_holding: 0, no_reply: false, text: false, message_id: None }
    }
}

/// A message delivered to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Sender address (for a MultiClient: without the `__i__.` prefix).
    pub src: String,
    /// The data: raw bytes for binary messages, UTF-8 for text.
    pub data: Bytes,
    /// The message ID (answers refer to it).
    pub message_id: Bytes,
    /// Whether the message was TEXT.
    pub is_text: bool,
    /// The sender does not want an answer.
    pub no_reply: bool,
    /// Whether it arrived encrypted (answers mirror this).
    pub encrypted: bool,
    /// BINARY, TEXT or SESSION.
    pub payload_type: PayloadType,
}

/// An answer to a sent message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Who answered.
    pub src: String,
    /// The reply data, `None` for an ACK.
    pub data: Option<Bytes>,
    /// Whether the reply was TEXT.
    pub is_text: bool,
}

/// Waiters for answers, by message ID. Shared by the sub-clients of a
/// MultiClient so that the first answer on any of them wins.
#[derive(Default)]
pub(crate) struct Pending(Mutex<HashMap<Bytes, oneshot::Sender<Reply>>>);

impl Pending {
    pub(crate) fn register(&self, id: Bytes) -> oneshot::Receiver<Reply> {
        let (tx, rx) = oneshot::channel();
        self.0.lock().unwrap().insert(id, tx);
        rx
    }
    fn resolve(&self, id: &Bytes, reply: Reply) -> bool {
        match self.0.lock().unwrap().remove(id) {
            Some(tx) => tx.send(reply).is_ok(),
            None => false,
        }
    }
    pub(crate) fn remove(&self, id: &Bytes) {
        self.0.lock().unwrap().remove(id);
    }
}

/// What the current connection needs for sending.
#[derive(Clone)]
struct Conn {
    generation: u64,
    out: mpsc::Sender<Bytes>,
    node: NodeInfo,
    node_pubkey: [u8; 32],
    block_hash: Bytes,
}

struct Inner {
    identity: Identity,
    address: String,
    config: ClientConfig,
    conn: Mutex<Option<Conn>>,
    shared_keys: Mutex<HashMap<[u8; 32], [u8; 32]>>,
    pending: Arc<Pending>,
    inbox: mpsc::Sender<Received>,
    cancel: CancellationToken,
    ready: watch::Sender<bool>,
}

impl Inner {
    fn shared_key(&self, peer: &[u8; 32]) -> Result<[u8; 32]> {
        if let Some(k) = self.shared_keys.lock().unwrap().get(peer) {
            return Ok(*k);
        }
        let k = self.identity.shared_key(peer)?;
        let mut cache = self.shared_keys.lock().unwrap();
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(*peer, k);
        Ok(k)
    }
}

/// One NKN client. Dropping it (or [`Client::close`]) ends its connection.
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("address", &self.inner.address).finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Client {
    /// Starts a client (it connects in the background) and returns it with
    /// the receiver of incoming messages. Must be called inside a tokio
    /// runtime.
    pub fn new(identity: Identity, config: ClientConfig) -> (Client, mpsc::Receiver<Received>) {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        (Self::with_parts(identity, config, Arc::new(Pending::default()), tx), rx)
    }

    pub(crate) fn with_parts(
        identity: Identity,
        config: ClientConfig,
        pending: Arc<Pending>,
        inbox: mpsc::Sender<Received>,
    ) -> Client {
        let address = identity.address(&config.identifier);
        let inner = Arc::new(Inner {
            identity,
            address,
            config,
            conn: Mutex::new(None),
            shared_keys: Mutex::new(HashMap::new()),
            pending,
            inbox,
            cancel: CancellationToken::new(),
            ready: watch::channel(false).0,
        });
        tokio::spawn(run(inner.clone()));
        Client { inner }
    }

    /// This client's address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// This client's identity.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// Whether a node has accepted `setClient` and the connection is up.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// The node this client is connected to, if any.
    pub fn node(&self) -> Option<NodeInfo> {
        self.inner.conn.lock().unwrap().as_ref().map(|c| c.node.clone())
    }

    /// The current `sigChainBlockHash`, if connected.
    pub fn block_hash(&self) -> Option<Bytes> {
        self.inner.conn.lock().unwrap().as_ref().map(|c| c.block_hash.clone())
    }

    /// Waits until the client is ready.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.inner.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.map_err(|_| NknError::Timeout)?.map_err(|_| NknError::Closed)?;
        Ok(())
    }

    /// A watch of the ready state.
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// Ends the connection; the client does not reconnect.
    pub fn close(&self) {
        self.inner.cancel.cancel();
    }

    /// Sends `data` to `dests` and returns the message ID. Messages sent
    /// while disconnected fail with [`NknError::NotConnected`] (nothing is
    /// queued, as in the SDKs).
    pub async fn send<S: AsRef<str>>(&self, dests: &[S], data: Bytes, opts: SendOptions) -> Result<Bytes> {
        let id = opts.message_id.clone().unwrap_or_else(payload::new_message_id);
        let p = if opts.text {
            let t = std::str::from_utf8(&data).map_err(|_| NknError::Malformed("text is not UTF-8"))?;
            payload::text(id.clone(), t, opts.no_reply)
        } else {
            payload::binary(id.clone(), data, opts.no_reply)
        };
        self.send_payload(dests, &p, opts.encrypt, opts.max_holding).await?;
        Ok(id)
    }

    /// Sends and waits for the first reply or ACK (`timeout` bounds the wait).
    pub async fn send_and_wait_reply<S: AsRef<str>>(
        &self,
        dests: &[S],
        data: Bytes,
        mut opts: SendOptions,
        timeout: Duration,
    ) -> Result<Reply> {
        let id = opts.message_id.clone().unwrap_or_else(payload::new_message_id);
        opts.message_id = Some(id.clone());
        let rx = self.inner.pending.register(id.clone());
        if let Err(e) = self.send(dests, data, opts).await {
            self.inner.pending.remove(&id);
            return Err(e);
        }
        wait_reply(&self.inner.pending, id, rx, timeout).await
    }

    /// Answers a received message: `Some(data)` sends a binary reply,
    /// `None` an ACK. Does nothing when the sender asked for no reply.
    pub async fn reply(&self, to: &Received, data: Option<Bytes>) -> Result<()> {
        if to.no_reply {
            return Ok(());
        }
        let p = answer_payload(to, data);
        self.send_payload(&[to.src.as_str()], &p, to.encrypted, 0).await
    }

    /// Answers a received message with text.
    pub async fn reply_text(&self, to: &Received, text: &str) -> Result<()> {
        if to.no_reply {
            return Ok(());
        }
        let p = payload::reply_text(to.message_id.clone(), text);
        self.send_payload(&[to.src.as_str()], &p, to.encrypted, 0).await
    }

    /// Encrypts, signs and queues one payload for `dests`.
    pub(crate) async fn send_payload<S: AsRef<str>>(
        &self,
        dests: &[S],
        p: &Payload,
        encrypt: bool,
        max_holding: u32,
    ) -> Result<()> {
        let conn = self.inner.conn.lock().unwrap().clone().ok_or(NknError::NotConnected)?;
        let dests: Vec<Address> = dests.iter().map(|d| Address::parse(d.as_ref())).collect::<Result<_>>()?;
        let frame = build_send_frame(
            &self.inner.identity,
            &self.inner.address,
            &dests,
            p,
            encrypt,
            max_holding,
            conn.node_pubkey,
            conn.block_hash.clone(),
            |pk| self.inner.shared_key(pk),
        )?;
        conn.out.send(frame).await.map_err(|_| NknError::NotConnected)
    }
}

/// The answer payload to `to`: a binary reply or an ACK.
pub(crate) fn answer_payload(to: &Received, data: Option<Bytes>) -> Payload {
    match data {
        Some(d) => payload::reply_binary(to.message_id.clone(), d),
        None => payload::ack(to.message_id.clone()),
    }
}

pub(crate) async fn wait_reply(
    pending: &Pending,
    id: Bytes,
    rx: oneshot::Receiver<Reply>,
    timeout: Duration,
) -> Result<Reply> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(NknError::Closed),
        Err(_) => {
            pending.remove(&id);
            Err(NknError::Timeout)
        }
    }
}

/// Builds the OUTBOUND_MESSAGE frame for a payload: plain, single-
/// destination encrypted, or the multi-destination scheme for several
/// encrypted destinations (§6, §7.2).
#[allow(clippy::too_many_arguments)]
pub fn build_send_frame(
    identity: &Identity,
    src: &str,
    dests: &[Address],
    p: &Payload,
    encrypt: bool,
    max_holding: u32,
    node_pubkey: [u8; 32],
    block_hash: Bytes,
    shared_key: impl Fn(&[u8; 32]) -> Result<[u8; 32]>,
) -> Result<Bytes> {
    if dests.is_empty() {
        return Err(NknError::Malformed("no destination"));
    }
    let plain = payload::encode(p);
    let envelopes = if !encrypt {
        vec![crypto::plain_envelope(&plain)]
    } else if dests.len() == 1 {
        vec![crypto::encrypt_single(&shared_key(&dests[0].public_key)?, &crypto::random_nonce(), &plain)]
    } else {
        let keys = dests
            .iter()
            .map(|d| Ok((shared_key(&d.public_key)?, crypto::random_nonce())))
            .collect::<Result<Vec<_>>>()?;
        crypto::encrypt_multi(&plain, &rand::random(), &crypto::random_nonce(), &keys)
    };
    let payloads: Vec<Bytes> = envelopes.iter().map(crypto::encode_envelope).collect();
    let dest_strs: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
    let size = payloads.iter().map(Bytes::len).sum::<usize>() + dest_strs.iter().map(|d| d.len() + 64).sum::<usize>();
    if size > MAX_CLIENT_MESSAGE {
        return Err(NknError::MessageTooLarge(size));
    }
    wire::build_outbound(
        identity,
        Outbound {
            src,
            dests: &dest_strs,
            payloads,
            node_pubkey,
            block_hash,
            nonce: rand::random(),
            max_holding_seconds: max_holding,
        },
    )
}

/// What an inbound message is for the application.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// An answer (reply or ACK) to the message `reply_to`.
    Response { reply_to: Bytes, reply: Reply },
    /// A new message.
    Message(Received),
}

/// Opens and interprets an inbound message (§8.4). The receipt is not
/// part of this: it is sent for any non-empty `prev_hash` before.
pub fn process_inbound(
    msg: &InboundMessage,
    allow_unencrypted: bool,
    shared_key: impl FnOnce(&[u8; 32]) -> Result<[u8; 32]>,
) -> Result<Inbound> {
    let env = crypto::decode_envelope(&msg.payload)?;
    let plain = crypto::open_envelope(&env, allow_unencrypted, || {
        let src = Address::parse(&msg.src)?;
        shared_key(&src.public_key)
    })?;
    let p = payload::decode(&plain)?;
    let data = payload::data_of(&p)?;
    let ty = PayloadType::try_from(p.r#type).map_err(|_| NknError::Malformed("payload type"))?;
    let is_text = ty == PayloadType::Text;
    if payload::is_response(&p) {
        let data = if ty == PayloadType::Ack { None } else { Some(data) };
        return Ok(Inbound::Response { reply_to: p.reply_to_id, reply: Reply { src: msg.src.clone(), data, is_text } });
    }
    Ok(Inbound::Message(Received {
        src: msg.src.clone(),
        data,
        message_id: p.message_id,
        is_text,
        no_reply: p.no_reply,
        encrypted: env.encrypted,
        payload_type: ty,
    }))
}

// ---------------------------------------------------------------------------
// The connection task

enum SessionEnd {
    /// The client was closed.
    Closed,
    /// The node sent us elsewhere (WRONG_NODE).
    Redirect(NodeInfo),
    /// The connection failed or was lost.
    Lost(NknError),
}

async fn run(inner: Arc<Inner>) {
    let cfg = inner.config.clone();
    let mut backoff = cfg.reconnect_min;
    let mut redirect: Option<NodeInfo> = None;
    let mut generation = 0u64;
    loop {
        if inner.cancel.is_cancelled() {
            break;
        }
        let node = match redirect.take() {
            Some(n) => Ok(n),
            None => tokio::select! {
                _ = inner.cancel.cancelled() => break,
                r = rpc::discover(&cfg.seed_rpc_servers, &inner.address, cfg.rpc_timeout) => r,
            },
        };
        let end = match node {
            Ok(node) => {
                generation += 1;
                session(&inner, node, generation, &mut backoff).await
            }
            Err(e) => SessionEnd::Lost(e),
        };
        // The connection of this generation is gone.
        {
            let mut c = inner.conn.lock().unwrap();
            if c.as_ref().is_some_and(|c| c.generation == generation) {
                *c = None;
            }
        }
        inner.ready.send_replace(false);
        match end {
            SessionEnd::Closed => break,
            SessionEnd::Redirect(n) => {
                tracing::debug!(address = %inner.address, node = %n.addr, "nkn: redirected to another node");
                redirect = Some(n);
                continue;
            }
            SessionEnd::Lost(e) => {
                tracing::debug!(address = %inner.address, error = %e, delay = ?backoff, "nkn: connection lost, reconnecting");
            }
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
    inner.ready.send_replace(false);
    *inner.conn.lock().unwrap() = None;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_send(ws: &mut Ws, m: WsMessage, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, ws.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NknError::WebSocket(e.to_string())),
        Err(_) => Err(NknError::WebSocket("write timeout".into())),
    }
}

/// Reads the next text frame as node JSON before `deadline` (other frames
/// are ignored until then).
async fn next_json(ws: &mut Ws, deadline: Instant) -> Result<Option<NodeJson>> {
    loop {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => return Err(NknError::WebSocket("closed".into())),
            Ok(Some(Err(e))) => return Err(NknError::WebSocket(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        match m {
            WsMessage::Text(t) => match serde_json::from_str::<NodeJson>(&t) {
                Ok(j) => return Ok(Some(j)),
                Err(e) => tracing::debug!(error = %e, "nkn: unparsable JSON from node"),
            },
            WsMessage::Close(_) => return Err(NknError::WebSocket("closed by node".into())),
            _ => {}
        }
    }
}

fn node_info_of(j: &NodeJson) -> Option<NodeInfo> {
    serde_json::from_value::<NodeInfo>(j.result.clone()).ok().filter(|n| !n.addr.is_empty() && n.public_key().is_ok())
}

async fn session(inner: &Arc<Inner>, node: NodeInfo, generation: u64, backoff: &mut Duration) -> SessionEnd {
    let cfg = &inner.config;
    let node_pubkey = match node.public_key() {
        Ok(pk) => pk,
        Err(e) => return SessionEnd::Lost(e),
    };
    let url = format!("ws://{}", node.addr);
    let connect = tokio::time::timeout(cfg.connect_timeout, tokio_tungstenite::connect_async(url.as_str()));
    let mut ws = tokio::select! {
        _ = inner.cancel.cancelled() => return SessionEnd::Closed,
        r = connect => match r {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return SessionEnd::Lost(NknError::WebSocket(format!("{url}: {e}"))),
            Err(_) => return SessionEnd::Lost(NknError::WebSocket(format!("{url}: connect timeout"))),
        },
    };
    let r = tokio::select! {
        _ = inner.cancel.cancelled() => return SessionEnd::Closed,
        r = handshake(inner, &mut ws) => r,
    };
    let block_hash = match r {
        Ok(Ok(h)) => h,
        Ok(Err(redirect)) => return SessionEnd::Redirect(redirect),
        Err(e) => return SessionEnd::Lost(e),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(256);
    *inner.conn.lock().unwrap() = Some(Conn { generation, out: out_tx, node, node_pubkey, block_hash });
    inner.ready.send_replace(true);
    *backoff = cfg.reconnect_min;
    tracing::debug!(address = %inner.address, %url, "nkn: connected");

    let mut ping = tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    let mut last_rx = Instant::now();
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
                return SessionEnd::Closed;
            }
            _ = tokio::time::sleep_until(last_rx + cfg.read_timeout) => {
                return SessionEnd::Lost(NknError::WebSocket("read timeout".into()));
            }
            _ = ping.tick() => {
                if let Err(e) = ws_send(&mut ws, WsMessage::Ping(Bytes::new()), cfg.write_timeout).await {
                    return SessionEnd::Lost(e);
                }
            }
            out = out_rx.recv() => {
                let Some(frame) = out else { return SessionEnd::Lost(NknError::NotConnected) };
                if let Err(e) = ws_send(&mut ws, WsMessage::Binary(frame), cfg.write_timeout).await {
                    return SessionEnd::Lost(e);
                }
            }
            m = ws.next() => {
                last_rx = Instant::now();
                let m = match m {
                    None => return SessionEnd::Lost(NknError::WebSocket("closed".into())),
                    Some(Err(e)) => return SessionEnd::Lost(NknError::WebSocket(e.to_string())),
                    Some(Ok(m)) => m,
                };
                match m {
                    WsMessage::Text(t) => {
                        let Ok(j) = serde_json::from_str::<NodeJson>(&t) else { continue };
                        if j.error == wire::ERR_WRONG_NODE {
                            if let Some(n) = node_info_of(&j) {
                                return SessionEnd::Redirect(n);
                            }
                        } else if j.action == "updateSigChainBlockHash" {
                            if let Some(h) = j.result.as_str().and_then(|h| hex::decode(h).ok()) {
                                if let Some(c) = inner.conn.lock().unwrap().as_mut() {
                                    c.block_hash = h.into();
                                }
                            }
                        } else {
                            tracing::debug!(action = %j.action, error = j.error, "nkn: unhandled node message");
                        }
                    }
                    WsMessage::Binary(b) => {
                        if let Err(e) = on_binary(inner, &mut ws, &b).await {
                            match e {
                                NknError::WebSocket(_) => return SessionEnd::Lost(e),
                                e => tracing::debug!(error = %e, "nkn: dropped inbound message"),
                            }
                        }
                    }
                    WsMessage::Close(_) => return SessionEnd::Lost(NknError::WebSocket("closed by node".into())),
                    _ => {}
                }
            }
        }
    }
}

/// `authChallenge` → `setClient` → reply. `Ok(Ok(block_hash))` when
/// accepted, `Ok(Err(node))` for a WRONG_NODE redirect.
async fn handshake(inner: &Inner, ws: &mut Ws) -> Result<Result<Bytes, NodeInfo>> {
    let cfg = &inner.config;
    let deadline = Instant::now() + cfg.challenge_timeout;
    let mut challenge = None;
    while let Some(j) = next_json(ws, deadline).await? {
        if j.action == "authChallenge" {
            challenge = j.challenge.as_deref().and_then(|c| hex::decode(c).ok());
            break;
        }
    }
    let sc = SetClient::new(&inner.identity, &inner.address, challenge.as_deref());
    ws_send(ws, WsMessage::text(sc.to_json()), cfg.write_timeout).await?;
    let deadline = Instant::now() + cfg.set_client_timeout;
    loop {
        let Some(j) = next_json(ws, deadline).await? else {
            return Err(NknError::Node("no setClient reply".into()));
        };
        if j.error == wire::ERR_WRONG_NODE {
            return node_info_of(&j).map(Err).ok_or_else(|| NknError::Node("WRONG_NODE without node info".into()));
        }
        if j.action != "setClient" {
            continue;
        }
        if j.error != wire::ERR_SUCCESS {
            return Err(NknError::Node(format!("setClient refused: {} {}", j.error, j.desc)));
        }
        let h = j.result.get("sigChainBlockHash").and_then(|h| h.as_str()).and_then(|h| hex::decode(h).ok());
        return Ok(Ok(h.unwrap_or_default().into()));
    }
}

async fn on_binary(inner: &Inner, ws: &mut Ws, frame: &[u8]) -> Result<()> {
    let msg = wire::parse_inbound(frame)?;
    if !msg.prev_hash.is_empty() {
        let receipt = wire::build_receipt(&inner.identity, &msg.prev_hash);
        ws_send(ws, WsMessage::Binary(receipt), inner.config.write_timeout).await?;
    }
    match process_inbound(&msg, inner.config.allow_unencrypted, |pk| inner.shared_key(pk))? {
        Inbound::Response { reply_to, reply } => {
            if !inner.pending.resolve(&reply_to, reply) {
                tracing::trace!("nkn: answer without waiter");
            }
        }
        Inbound::Message(r) => {
            if inner.inbox.try_send(r).is_err() {
                tracing::warn!(address = %inner.address, "nkn: receive channel full or closed, message dropped");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nkn::identity::tests::{a, b};
    use prost::Message as _;

    /// Relays an outbound frame as a node would (no sockets).
    fn relay(frame: &[u8], src: &str) -> Vec<(String, InboundMessage)> {
        let (_, inner) = wire::decode_client_message(frame).unwrap();
        let p = wire::ParsedOutbound::from_message(crate::proto::nkn::OutboundMessage::decode(inner).unwrap()).unwrap();
        assert!(p.verify(src, &b().public_key()));
        p.dests
            .iter()
            .zip(&p.payloads)
            .map(|(d, pl)| {
                let f = wire::build_inbound(src, pl.clone(), Bytes::new());
                (d.clone(), wire::parse_inbound(&f).unwrap())
            })
            .collect()
    }

    #[test]
    fn send_receive_reply_without_sockets() {
        let (a, b) = (a(), b());
        let a_addr = a.address("x");
        let b_addr = Address::parse(&b.address("y")).unwrap();
        let p = payload::binary(Bytes::from_static(b"12345678"), Bytes::from_static(b"ping"), false);
        let frame = build_send_frame(&a, &a_addr, std::slice::from_ref(&b_addr), &p, true, 0, b.public_key(), Bytes::new(), |pk| {
            a.shared_key(pk)
        })
        .unwrap();
        let mut got = relay(&frame, &a_addr);
        assert_eq!(got.len(), 1);
        let (_, inbound) = got.pop().unwrap();
        let Inbound::Message(r) = process_inbound(&inbound, false, |pk| b.shared_key(pk)).unwrap() else { panic!() };
        assert_eq!(r.data.as_ref(), b"ping");
        assert_eq!(r.src, a_addr);
        assert!(r.encrypted && !r.is_text && !r.no_reply);
        assert_eq!(r.payload_type, PayloadType::Binary);

        // The reply goes back and resolves as a response.
        let reply = answer_payload(&r, Some(Bytes::from_static(b"pong")));
        let a_parsed = Address::parse(&a_addr).unwrap();
        let frame = build_send_frame(&b, &b_addr.to_string(), std::slice::from_ref(&a_parsed), &reply, true, 0, b.public_key(), Bytes::new(), |pk| b.shared_key(pk)).unwrap();
        let (_, inbound) = relay(&frame, &b_addr.to_string()).pop().unwrap();
        let Inbound::Response { reply_to, reply } = process_inbound(&inbound, false, |pk| a.shared_key(pk)).unwrap() else { panic!() };
        assert_eq!(reply_to.as_ref(), b"12345678");
        assert_eq!(reply.data.as_deref(), Some(&b"pong"[..]));

        // An ACK.
        let ack = answer_payload(&r, None);
        let frame = build_send_frame(&b, &b_addr.to_string(), &[a_parsed], &ack, false, 0, b.public_key(), Bytes::new(), |_| unreachable!()).unwrap();
        let (_, inbound) = relay(&frame, &b_addr.to_string()).pop().unwrap();
        assert!(process_inbound(&inbound, false, |pk| a.shared_key(pk)).is_err(), "unencrypted refused by default");
        let Inbound::Response { reply, .. } = process_inbound(&inbound, true, |pk| a.shared_key(pk)).unwrap() else { panic!() };
        assert_eq!(reply.data, None);
    }

    #[test]
    fn multicast_text() {
        let (a, b) = (a(), b());
        let a_addr = a.address("");
        let dests = vec![Address::parse(&b.address("one")).unwrap(), Address::parse(&b.address("two")).unwrap()];
        let p = payload::text(Bytes::from_static(b"abcdefgh"), "héllo", true);
        let frame = build_send_frame(&a, &a_addr, &dests, &p, true, 5, b.public_key(), Bytes::from_static(&[1; 32]), |pk| a.shared_key(pk)).unwrap();
        let got = relay(&frame, &a_addr);
        assert_eq!(got.len(), 2);
        for (d, inbound) in got {
            assert!(d.ends_with(&b.public_key_hex()));
            let env = crypto::decode_envelope(&inbound.payload).unwrap();
            assert_eq!(env.nonce.len(), 48);
            let Inbound::Message(r) = process_inbound(&inbound, false, |pk| b.shared_key(pk)).unwrap() else { panic!() };
            assert_eq!(std::str::from_utf8(&r.data).unwrap(), "héllo");
            assert!(r.is_text && r.no_reply);
        }
        // Too large.
        let big = payload::binary(Bytes::new(), Bytes::from(vec![0u8; MAX_CLIENT_MESSAGE]), false);
        assert!(matches!(
            build_send_frame(&a, &a_addr, &dests[..1], &big, false, 0, [0; 32], Bytes::new(), |_| unreachable!()),
            Err(NknError::MessageTooLarge(_))
        ));
    }
}
