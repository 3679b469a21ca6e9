//! NKN Client and MultiClient against a minimal in-test fake node (§11.2 of
//! the protocol notes): seed RPC `getwsaddr` over HTTP, WebSocket with
//! `authChallenge`/`setClient`, relaying OUTBOUND → INBOUND between
//! sessions on 127.0.0.1, receipts. The fake verifies every challenge,
//! outbound signature and receipt it sees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use resi::nkn::identity::client_id;
use resi::nkn::wire::{self, NodeInfo, NodeJson, ParsedOutbound, SetClient};
use resi::nkn::{Client, ClientConfig, Identity, MultiClient, MultiClientConfig, NknError, Received, SendOptions};
use resi::proto::nkn::{ClientMessageType, OutboundMessage, Receipt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Fake node

#[derive(Default)]
struct Stats {
    rpc_calls: AtomicUsize,
    set_clients: AtomicUsize,
    authenticated: AtomicUsize,
    outbound: AtomicUsize,
    bad_signatures: AtomicUsize,
    delivered: AtomicUsize,
    receipts_ok: AtomicUsize,
    receipts_bad: AtomicUsize,
}

type Sessions = HashMap<[u8; 32], Vec<(u64, mpsc::UnboundedSender<Bytes>)>>;

struct FakeNode {
    rpc_url: String,
    stats: Arc<Stats>,
    /// Cancelling it drops every WebSocket (the node "goes away").
    conns: Arc<Mutex<Vec<CancellationToken>>>,
    stop: CancellationToken,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeNode {
    async fn start() -> FakeNode {
        let identity = Identity::from_seed([9; 32]);
        let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rpc_url = format!("http://{}/", rpc_listener.local_addr().unwrap());
        let info = NodeInfo {
            addr: ws_listener.local_addr().unwrap().to_string(),
            rpc_addr: String::new(),
            pubkey: identity.public_key_hex(),
            id: hex::encode([7u8; 32]),
            sdp: String::new(),
        };
        let stats = Arc::new(Stats::default());
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let sessions: Arc<Mutex<Sessions>> = Arc::default();

        // RPC: one request per connection, any path.
        let (s, st, i) = (stop.clone(), stats.clone(), info.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = rpc_listener.accept() => r.unwrap(),
                };
                let (st, i) = (st.clone(), i.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(WAIT, serve_rpc(&mut sock, &st, &i)).await;
                });
            }
        });

        // WebSocket.
        let (s, st, c) = (stop.clone(), stats.clone(), conns.clone());
        tokio::spawn(async move {
            let mut next_id = 0u64;
            loop {
                let (sock, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = ws_listener.accept() => r.unwrap(),
                };
                next_id += 1;
                let token = s.child_token();
                c.lock().unwrap().push(token.clone());
                let (st, sess, id, info, ident) = (st.clone(), sessions.clone(), next_id, info.clone(), identity.clone());
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(sock).await else { return };
                    serve_ws(ws, id, token, st, sess.clone(), info, ident).await;
                    for list in sess.lock().unwrap().values_mut() {
                        list.retain(|(i, _)| *i != id);
                    }
                });
            }
        });

        FakeNode { rpc_url, stats, conns, stop }
    }

    fn drop_all_connections(&self) {
        for t in self.conns.lock().unwrap().drain(..) {
            t.cancel();
        }
    }

    fn config(&self) -> ClientConfig {
        ClientConfig {
            seed_rpc_servers: vec![self.rpc_url.clone()],
            rpc_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            challenge_timeout: Duration::from_secs(2),
            set_client_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_millis(400),
            ..ClientConfig::default()
        }
    }
}

async fn serve_rpc(sock: &mut tokio::net::TcpStream, stats: &Stats, info: &NodeInfo) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, content_length) = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
            let cl = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (p + 4, cl);
        }
    };
    while buf.len() < head_end + content_length {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stats.rpc_calls.fetch_add(1, Ordering::SeqCst);
    let req: serde_json::Value = serde_json::from_slice(&buf[head_end..head_end + content_length]).unwrap_or_default();
    let id = req.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let body = match req.get("method").and_then(|m| m.as_str()) {
        Some("getwsaddr") => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": info}),
        Some("getnodestate") => serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"syncState": "PERSIST_FINISHED"}}),
        _ => serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": -42001, "message": "INVALID METHOD"}}),
    }
    .to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

async fn serve_ws(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    conn_id: u64,
    token: CancellationToken,
    stats: Arc<Stats>,
    sessions: Arc<Mutex<Sessions>>,
    info: NodeInfo,
    identity: Identity,
) {
    let challenge: [u8; 32] = rand::random();
    if ws.send(WsMessage::text(NodeJson::auth_challenge(&challenge).to_json())).await.is_err() {
        return;
    }
    // setClient
    let addr = loop {
        let m = tokio::select! {
            _ = token.cancelled() => return,
            m = ws.next() => m,
        };
        let Some(Ok(m)) = m else { return };
        let WsMessage::Text(t) = m else { continue };
        let Ok(sc) = serde_json::from_str::<SetClient>(&t) else { continue };
        if sc.action != "setClient" {
            continue;
        }
        match sc.verify(&challenge) {
            Ok(auth) => {
                if auth {
                    stats.authenticated.fetch_add(1, Ordering::SeqCst);
                }
                break sc.addr;
            }
            Err(e) => {
                let j = NodeJson::error("setClient", wire::ERR_INVALID_SIGNATURE, &e.to_string(), serde_json::Value::Null);
                let _ = ws.send(WsMessage::text(j.to_json())).await;
                return;
            }
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    sessions.lock().unwrap().entry(client_id(&addr)).or_default().push((conn_id, tx));
    stats.set_clients.fetch_add(1, Ordering::SeqCst);
    if ws.send(WsMessage::text(NodeJson::set_client_ok(&info, &[0xaa; 32]).to_json())).await.is_err() {
        return;
    }
    let own_pk = resi::nkn::Address::parse(&addr).unwrap().public_key;
    let node_pk = identity.public_key();
    loop {
        tokio::select! {
            _ = token.cancelled() => return, // dropped without a close frame
            out = rx.recv() => {
                let Some(f) = out else { return };
                if ws.send(WsMessage::Binary(f)).await.is_err() { return; }
            }
            m = ws.next() => {
                let Some(Ok(m)) = m else { return };
                let WsMessage::Binary(b) = m else { continue };
                let Ok((ty, inner)) = wire::decode_client_message(&b) else { continue };
                match ty {
                    ClientMessageType::OutboundMessage => {
                        stats.outbound.fetch_add(1, Ordering::SeqCst);
                        let Ok(p) = OutboundMessage::decode(inner).map_err(NknError::from).and_then(ParsedOutbound::from_message) else { continue };
                        if !p.verify(&addr, &node_pk) {
                            stats.bad_signatures.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        for (i, d) in p.dests.iter().enumerate() {
                            // prev_hash: the sender's signature (non-empty, so receipts flow).
                            let frame = wire::build_inbound(&addr, p.payloads[i].clone(), p.signatures[i].clone());
                            let list = sessions.lock().unwrap().get(&client_id(d)).cloned().unwrap_or_default();
                            for (_, s) in list {
                                if s.send(frame.clone()).is_ok() {
                                    stats.delivered.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                    ClientMessageType::Receipt => {
                        let ok = Receipt::decode(inner).map(|r| wire::verify_receipt(&own_pk, &r)).unwrap_or(false);
                        let c = if ok { &stats.receipts_ok } else { &stats.receipts_bad };
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    ClientMessageType::InboundMessage => {}
                }
            }
        }
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn recv(rx: &mut mpsc::Receiver<Received>) -> Received {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("message in time").expect("channel open")
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn two_clients_exchange_encrypted_with_replies() {
    init_tracing();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let node = FakeNode::start().await;
        let (a, mut a_rx) = Client::new(Identity::generate(), ClientConfig { identifier: "alice".into(), ..node.config() });
        let (b, mut b_rx) = Client::new(Identity::generate(), ClientConfig { identifier: "bob".into(), ..node.config() });
        a.wait_ready(WAIT).await.unwrap();
        b.wait_ready(WAIT).await.unwrap();
        assert_eq!(a.block_hash().unwrap().as_ref(), &[0xaa; 32]);
        assert_eq!(node.stats.authenticated.load(Ordering::SeqCst), 2);

        // A → B, B replies with data.
        let b_addr = b.address().to_string();
        let req = {
            let a_addr = a.address().to_string();
            let waiter = tokio::spawn({
                let data = Bytes::from_static(b"\x00\x01binary request\xff");
                let b_addr = b_addr.clone();
                async move {
                    let r = a.send_and_wait_reply(&[b_addr], data, SendOptions::default(), WAIT).await;
                    (a, r)
                }
            });
            let m = recv(&mut b_rx).await;
            assert_eq!(m.src, a_addr);
            assert_eq!(m.data.as_ref(), b"\x00\x01binary request\xff");
            assert!(m.encrypted && !m.is_text && !m.no_reply);
            b.reply(&m, Some(Bytes::from_static(b"binary reply"))).await.unwrap();
            let (a, r) = waiter.await.unwrap();
            let r = r.unwrap();
            assert_eq!(r.src, b_addr);
            assert_eq!(r.data.as_deref(), Some(&b"binary reply"[..]));
            a
        };
        let a = req;

        // B → A, A answers with an ACK.
        let id = b.send(&[a.address()], Bytes::from_static(b"second"), SendOptions::default()).await.unwrap();
        let m = recv(&mut a_rx).await;
        assert_eq!(m.message_id, id);
        assert_eq!(m.src, b_addr);
        let a_addr = a.address().to_string();
        let waiter = tokio::spawn(async move {
            let r = b.send_and_wait_reply(&[a_addr], Bytes::from_static(b"third"), SendOptions::default(), WAIT).await;
            (b, r)
        });
        let m3 = recv(&mut a_rx).await;
        assert_eq!(m3.data.as_ref(), b"third");
        a.reply(&m3, None).await.unwrap();
        let (b, r) = waiter.await.unwrap();
        assert_eq!(r.unwrap().data, None, "ACK");

        // Text, and no_reply makes reply() a no-op.
        b.send(&[a.address()], Bytes::from_static("héllo".as_bytes()), SendOptions { text: true, no_reply: true, ..Default::default() })
            .await
            .unwrap();
        let m = recv(&mut a_rx).await;
        assert!(m.is_text && m.no_reply);
        assert_eq!(std::str::from_utf8(&m.data).unwrap(), "héllo");
        a.reply(&m, Some(Bytes::from_static(b"ignored"))).await.unwrap();

        // No answer: timeout.
        let r = b.send_and_wait_reply(&[a.address()], Bytes::from_static(b"nobody answers"), SendOptions::default(), Duration::from_millis(300)).await;
        assert!(matches!(r, Err(NknError::Timeout)), "{r:?}");
        let _ = recv(&mut a_rx).await;

        // Everything the node checked was valid, and receipts flowed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(node.stats.bad_signatures.load(Ordering::SeqCst), 0);
        assert_eq!(node.stats.receipts_bad.load(Ordering::SeqCst), 0);
        assert_eq!(node.stats.receipts_ok.load(Ordering::SeqCst), node.stats.delivered.load(Ordering::SeqCst));
        assert!(node.stats.delivered.load(Ordering::SeqCst) >= 6);
        a.close();
        b.close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn multiclient_delivers_each_message_once() {
    init_tracing();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let node = FakeNode::start().await;
        let mc = |id: &str| MultiClientConfig {
            client: ClientConfig { identifier: id.into(), ..node.config() },
            num_clients: 3,
            ..MultiClientConfig::default()
        };
        let (m1, mut m1_rx) = MultiClient::new(Identity::generate(), mc("one"));
        let (m2, mut m2_rx) = MultiClient::new(Identity::generate(), mc(""));
        m1.wait_ready_count(3, WAIT).await.unwrap();
        m2.wait_ready_count(3, WAIT).await.unwrap();
        assert_eq!(node.stats.set_clients.load(Ordering::SeqCst), 6);

        let mut ids = Vec::new();
        for i in 0..5u8 {
            ids.push(m1.send(&[m2.address()], Bytes::from(vec![i; 10]), SendOptions::default()).await.unwrap());
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(recv(&mut m2_rx).await);
        }
        // Nothing more arrives: the other copies were dropped.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(m2_rx.try_recv().is_err(), "duplicate delivered");
        assert_eq!(node.stats.delivered.load(Ordering::SeqCst), 15, "each message went over 3 sub-clients");
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r.src, m1.address(), "prefix stripped");
            assert_eq!(r.message_id, ids[i]);
            assert_eq!(r.data.as_ref(), &[i as u8; 10]);
        }

        // A request with a reply, the other way round.
        let m2 = Arc::new(m2);
        let waiter = tokio::spawn({
            let m2 = m2.clone();
            let dest = m1.address().to_string();
            async move { m2.send_and_wait_reply(&[dest], Bytes::from_static(b"q"), SendOptions::default(), WAIT).await }
        });
        let q = recv(&mut m1_rx).await;
        assert_eq!(q.src, m2.address());
        m1.reply(&q, Some(Bytes::from_static(b"a"))).await.unwrap();
        let r = waiter.await.unwrap().unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"a"[..]));
        assert_eq!(r.src, m1.address());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(m1_rx.try_recv().is_err() && m2_rx.try_recv().is_err(), "answers never reach the receivers");
        assert_eq!(node.stats.bad_signatures.load(Ordering::SeqCst), 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn client_reconnects_after_node_drops_websocket() {
    init_tracing();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let node = FakeNode::start().await;
        let (a, _a_rx) = Client::new(Identity::generate(), node.config());
        let (b, mut b_rx) = Client::new(Identity::generate(), node.config());
        a.wait_ready(WAIT).await.unwrap();
        b.wait_ready(WAIT).await.unwrap();
        let rpc_before = node.stats.rpc_calls.load(Ordering::SeqCst);

        let mut ready = a.ready_watch();
        node.drop_all_connections();
        tokio::time::timeout(WAIT, ready.wait_for(|r| !*r)).await.expect("noticed the drop").unwrap();
        let e = a.send(&[b.address()], Bytes::from_static(b"lost"), SendOptions::default()).await;
        assert!(matches!(e, Err(NknError::NotConnected)) || a.is_ready(), "{e:?}");

        // Both sessions are back (b may not have noticed the drop yet when a did).
        wait_until(|| node.stats.set_clients.load(Ordering::SeqCst) == 4).await;
        a.wait_ready(WAIT).await.unwrap();
        b.wait_ready(WAIT).await.unwrap();
        assert!(node.stats.rpc_calls.load(Ordering::SeqCst) >= rpc_before + 2, "discovery re-run");

        a.send(&[b.address()], Bytes::from_static(b"after"), SendOptions::default()).await.unwrap();
        let m = recv(&mut b_rx).await;
        assert_eq!(m.data.as_ref(), b"after");

        // Again, to see the backoff was reset.
        node.drop_all_connections();
        wait_until(|| node.stats.set_clients.load(Ordering::SeqCst) == 6).await;
        a.wait_ready(WAIT).await.unwrap();
        b.wait_ready(WAIT).await.unwrap();
        a.send(&[b.address()], Bytes::from_static(b"again"), SendOptions::default()).await.unwrap();
        assert_eq!(recv(&mut b_rx).await.data.as_ref(), b"again");
    })
    .await
    .expect("test timed out");
}
