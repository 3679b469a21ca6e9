//! The embedded local NKN node against raw clients: HTTP JSON-RPC over a TCP
//! socket and a bare tokio-tungstenite websocket that does the handshake and
//! builds frames by hand (per `shared/docs/nkn-client-protocol.md`).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use resi::nkn::node::{challenge_digest, outbound_digest, receipt_digest, LocalNode, NodeConfig};
use resi::proto::nkn::{ClientMessage, ClientMessageType, CompressionType, InboundMessage, OutboundMessage, Receipt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const T: Duration = Duration::from_secs(5);

async fn rpc(node: &LocalNode, body: &str) -> Value {
    let mut s = TcpStream::connect(node.rpc_addr()).await.unwrap();
    let req = format!(
        "POST /any/path HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap()
}

struct Client {
    ws: Ws,
    key: SigningKey,
    addr: String,
    node_pubkey: [u8; 32],
    block_hash: Vec<u8>,
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn address(key: &SigningKey, ident: &str) -> String {
    let pk = hex::encode(key.verifying_key().to_bytes());
    if ident.is_empty() {
        pk
    } else {
        format!("{ident}.{pk}")
    }
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("timeout waiting for a text frame")
        {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn open_ws(node: &LocalNode) -> (Ws, Vec<u8>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", node.ws_addr()))
        .await
        .unwrap();
    let ch = next_text(&mut ws).await;
    assert_eq!(ch["Action"], "authChallenge");
    assert_eq!(ch["Error"], 0);
    let challenge = hex::decode(ch["Challenge"].as_str().unwrap()).unwrap();
    assert_eq!(challenge.len(), 32);
    (ws, challenge)
}

fn set_client_frame(key: &SigningKey, addr: &str, challenge: &[u8]) -> String {
    let salt = [0x5a; 32];
    let sig = key.sign(&challenge_digest(challenge, &salt));
    json!({"Action": "setClient", "Addr": addr, "ClientSalt": hex::encode(salt), "Signature": hex::encode(sig.to_bytes())})
        .to_string()
}

impl Client {
    async fn connect(node: &LocalNode, key: SigningKey, ident: &str) -> Client {
        let addr = address(&key, ident);
        let (mut ws, challenge) = open_ws(node).await;
        ws.send(WsMessage::text(set_client_frame(&key, &addr, &challenge)))
            .await
            .unwrap();
        let r = next_text(&mut ws).await;
        assert_eq!(r["Action"], "setClient", "{r}");
        assert_eq!(r["Error"], 0, "{r}");
        assert_eq!(r["Result"]["node"]["pubkey"], hex::encode(node.pubkey()));
        let block_hash = hex::decode(r["Result"]["sigChainBlockHash"].as_str().unwrap()).unwrap();
        Client {
            ws,
            key,
            addr,
            node_pubkey: node.pubkey(),
            block_hash,
        }
    }

    fn outbound(&self, dests: &[&str], payloads: &[&[u8]], hold: u32) -> OutboundMessage {
        let nonce = rand::random::<u32>() >> 1;
        let src_pk = self.key.verifying_key().to_bytes();
        let signatures = dests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let p = if payloads.len() == 1 { payloads[0] } else { payloads[i] };
                let dpk: [u8; 32] = hex::decode(d.rsplit('.').next().unwrap()).unwrap().try_into().unwrap();
                let digest = outbound_digest(
                    nonce,
                    p.len() as u32,
                    &self.block_hash,
                    &self.addr,
                    &src_pk,
                    d,
                    &dpk,
                    &self.node_pubkey,
                );
                Bytes::copy_from_slice(&self.key.sign(&digest).to_bytes())
            })
            .collect();
        OutboundMessage {
            dests: dests.iter().map(|d| d.to_string()).collect(),
            payloads: payloads.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
            max_holding_seconds: hold,
            nonce,
            block_hash: self.block_hash.clone().into(),
            signatures,
            ..Default::default()
        }
    }

    async fn send_outbound(&mut self, msg: &OutboundMessage, zlib: bool) {
        let inner = msg.encode_to_vec();
        let (message, compression) = if zlib {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&inner).unwrap();
            (e.finish().unwrap(), CompressionType::CompressionZlib)
        } else {
            (inner, CompressionType::CompressionNone)
        };
        let cm = ClientMessage {
            message_type: ClientMessageType::OutboundMessage as i32,
            message: message.into(),
            compression_type: compression as i32,
        };
        self.ws.send(WsMessage::binary(cm.encode_to_vec())).await.unwrap();
    }

    async fn send(&mut self, dest: &str, payload: &[u8]) {
        let m = self.outbound(&[dest], &[payload], 0);
        self.send_outbound(&m, false).await;
    }

    /// Next inbound message (within `wait`), after sending its receipt.
    async fn recv_within(&mut self, wait: Duration) -> Option<InboundMessage> {
        loop {
            let f = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return None,
                Ok(f) => f,
            };
            match f {
                Some(Ok(WsMessage::Binary(b))) => {
                    let cm = ClientMessage::decode(b).unwrap();
                    assert_eq!(cm.message_type, ClientMessageType::InboundMessage as i32);
                    assert_eq!(cm.compression_type, CompressionType::CompressionNone as i32);
                    let m = InboundMessage::decode(cm.message).unwrap();
                    if !m.prev_hash.is_empty() {
                        let r = Receipt {
                            prev_hash: m.prev_hash.clone(),
                            signature: Bytes::copy_from_slice(&self.key.sign(&receipt_digest(&m.prev_hash)).to_bytes()),
                        };
                        let cm = ClientMessage {
                            message_type: ClientMessageType::Receipt as i32,
                            message: r.encode_to_vec().into(),
                            compression_type: 0,
                        };
                        self.ws.send(WsMessage::binary(cm.encode_to_vec())).await.unwrap();
                    }
                    return Some(m);
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                other => panic!("expected an inbound message, got {other:?}"),
            }
        }
    }

    async fn recv(&mut self) -> InboundMessage {
        self.recv_within(T).await.expect("no inbound message")
    }
}

/// Polls `cond` on the node's stats until it holds (or panics after 5 s).
async fn eventually(node: &LocalNode, what: &str, cond: impl Fn(&resi::nkn::node::NodeStats) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let s = node.stats();
        if cond(&s) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the server closes the connection; returns the close code.
async fn closed(ws: &mut Ws) -> Option<u16> {
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("connection not closed") {
            Some(Ok(WsMessage::Close(f))) => return f.map(|f| f.code.into()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn rpc_answers_node_info_and_refuses_unknown_methods() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let r = rpc(
        &node,
        r#"{"jsonrpc":"2.0","id":"nkn-sdk-js","method":"getwsaddr","params":{"address":"x"}}"#,
    )
    .await;
    assert_eq!(r["jsonrpc"], "2.0");
    assert_eq!(r["id"], "nkn-sdk-js");
    assert_eq!(r["result"]["addr"], node.ws_addr().to_string());
    assert_eq!(r["result"]["rpcAddr"], node.rpc_addr().to_string());
    assert_eq!(r["result"]["pubkey"], hex::encode(node.pubkey()));
    assert_eq!(r["result"]["id"].as_str().unwrap().len(), 64);
    assert_eq!(r["result"]["sdp"], "");
    let s = rpc(&node, r#"{"jsonrpc":"2.0","id":3,"method":"getnodestate","params":{}}"#).await;
    assert_eq!(s["id"], 3);
    assert_eq!(s["result"]["syncState"], "PERSIST_FINISHED");
    let e = rpc(
        &node,
        r#"{"jsonrpc":"2.0","id":4,"method":"sendrawtransaction","params":{}}"#,
    )
    .await;
    assert_eq!(e["error"]["code"], -42001);
    assert_eq!(node.stats().rpc_requests, 3);
    node.shutdown().await;
}

#[tokio::test]
async fn relay_between_two_clients_with_receipts() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "alice").await;
    let mut b = Client::connect(&node, key(2), "").await;
    assert_eq!(node.stats().clients_connected, 2);
    let b_addr = b.addr.clone();
    a.send(&b_addr, b"hello nkn").await;
    let m = b.recv().await;
    assert_eq!(m.src, a.addr);
    assert_eq!(&m.payload[..], b"hello nkn");
    assert_eq!(m.prev_hash.len(), 32);
    // And back, to the identifier address.
    let a_addr = a.addr.clone();
    b.send(&a_addr, b"reply").await;
    assert_eq!(&a.recv().await.payload[..], b"reply");
    eventually(&node, "two receipts", |s| s.receipts == 2).await;
    let s = node.stats();
    assert_eq!(
        (s.relayed, s.outbound_messages, s.bad_signatures, s.bad_receipts),
        (2, 2, 0, 0)
    );
    drop(a);
    eventually(&node, "a disconnected", |s| s.clients_connected == 1).await;
    node.shutdown().await;
}

#[tokio::test]
async fn bad_outbound_signature_is_dropped_and_counted() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let mut b = Client::connect(&node, key(2), "").await;
    let b_addr = b.addr.clone();
    // Signed for another node key: the element pubkey does not match ours.
    a.node_pubkey = [9; 32];
    a.send(&b_addr, b"forged").await;
    // A signature made by a key that is not the sender's.
    a.node_pubkey = node.pubkey();
    let mut m = a.outbound(&[&b_addr], &[b"x"], 0);
    m.signatures[0] = Bytes::copy_from_slice(&key(7).sign(b"whatever").to_bytes());
    a.send_outbound(&m, false).await;
    // Wrong signature count: refused as invalid.
    let mut m = a.outbound(&[&b_addr], &[b"x"], 0);
    m.signatures.clear();
    a.send_outbound(&m, false).await;
    eventually(&node, "two bad signatures, one invalid", |s| {
        s.bad_signatures == 2 && s.invalid_messages == 1
    })
    .await;
    assert!(b.recv_within(Duration::from_millis(300)).await.is_none());
    // The sender is still connected and a good message still goes through.
    a.send(&b_addr, b"good").await;
    assert_eq!(&b.recv().await.payload[..], b"good");
    assert_eq!(node.stats().relayed, 1);
    node.shutdown().await;
}

#[tokio::test]
async fn set_client_refuses_bad_address_and_bad_challenge_answer() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    // Bad address: 42002, connection stays usable.
    let (mut ws, challenge) = open_ws(&node).await;
    ws.send(WsMessage::text(
        json!({"Action": "setClient", "Addr": "alice.nothex"}).to_string(),
    ))
    .await
    .unwrap();
    let r = next_text(&mut ws).await;
    assert_eq!(
        (r["Action"].as_str(), r["Error"].as_i64()),
        (Some("setClient"), Some(42002))
    );
    let k = key(3);
    ws.send(WsMessage::text(set_client_frame(&k, &address(&k, ""), &challenge)))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["Error"], 0);

    // Challenge answered with another key: 42003, then closed.
    let (mut ws, challenge) = open_ws(&node).await;
    ws.send(WsMessage::text(set_client_frame(
        &key(4),
        &address(&key(5), ""),
        &challenge,
    )))
    .await
    .unwrap();
    let r = next_text(&mut ws).await;
    assert_eq!(r["Error"], 42003);
    assert_eq!(closed(&mut ws).await, Some(1008));

    // No challenge answer at all: refused too (require_client_auth).
    let (mut ws, _) = open_ws(&node).await;
    ws.send(WsMessage::text(
        json!({"Action": "setClient", "Addr": address(&key(5), "")}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws).await["Error"], 42003);
    let s = node.stats();
    assert_eq!((s.set_client_ok, s.set_client_failed, s.clients_connected), (1, 3, 1));
    node.shutdown().await;
}

#[tokio::test]
async fn binary_before_set_client_is_rejected() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let (mut ws, challenge) = open_ws(&node).await;
    ws.send(WsMessage::binary(vec![8, 0, 18, 0])).await.unwrap();
    let r = next_text(&mut ws).await;
    assert_eq!(r["Error"], 42002);
    assert_eq!(node.stats().rejected_before_set_client, 1);
    let k = key(6);
    ws.send(WsMessage::text(set_client_frame(&k, &address(&k, ""), &challenge)))
        .await
        .unwrap();
    assert_eq!(next_text(&mut ws).await["Error"], 0);
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_frames_close_only_that_client() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let mut b = Client::connect(&node, key(2), "").await;
    let mut c = Client::connect(&node, key(3), "").await;
    let mut d = Client::connect(&node, key(4), "").await;
    // Not protobuf.
    c.ws.send(WsMessage::binary(vec![0xff, 0xff, 0xff])).await.unwrap();
    assert_eq!(closed(&mut c.ws).await, Some(1002));
    // Not JSON.
    d.ws.send(WsMessage::text("{nope")).await.unwrap();
    assert_eq!(closed(&mut d.ws).await, Some(1002));
    // Claims zlib but is not.
    let cm = ClientMessage {
        message_type: 0,
        message: Bytes::from_static(b"not zlib"),
        compression_type: CompressionType::CompressionZlib as i32,
    };
    a.ws.send(WsMessage::binary(cm.encode_to_vec())).await.unwrap();
    assert!(closed(&mut a.ws).await.is_some());
    eventually(&node, "three malformed", |s| {
        s.malformed_frames == 3 && s.clients_connected == 1
    })
    .await;
    // b is unaffected.
    let mut e = Client::connect(&node, key(5), "").await;
    let b_addr = b.addr.clone();
    e.send(&b_addr, b"still here").await;
    assert_eq!(&b.recv().await.payload[..], b"still here");
    node.shutdown().await;
}

#[tokio::test]
async fn compressed_multicast_with_per_destination_payloads() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let mut b = Client::connect(&node, key(2), "__0__").await;
    let mut c = Client::connect(&node, key(3), "__0__").await;
    let (b_addr, c_addr) = (b.addr.clone(), c.addr.clone());
    let m = a.outbound(&[&b_addr, &c_addr], &[b"for b", b"for c!"], 0);
    a.send_outbound(&m, true).await;
    assert_eq!(&b.recv().await.payload[..], b"for b");
    assert_eq!(&c.recv().await.payload[..], b"for c!");
    // One shared payload for both.
    let m = a.outbound(&[&b_addr, &c_addr], &[b"shared"], 0);
    a.send_outbound(&m, false).await;
    assert_eq!(&b.recv().await.payload[..], b"shared");
    assert_eq!(&c.recv().await.payload[..], b"shared");
    let s = node.stats();
    assert_eq!((s.relayed, s.bad_signatures, s.outbound_messages), (4, 0, 2));
    node.shutdown().await;
}

#[tokio::test]
async fn several_sessions_per_address_all_receive() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let mut b1 = Client::connect(&node, key(2), "x").await;
    let mut b2 = Client::connect(&node, key(2), "x").await;
    let b_addr = b1.addr.clone();
    a.send(&b_addr, b"both").await;
    assert_eq!(&b1.recv().await.payload[..], b"both");
    assert_eq!(&b2.recv().await.payload[..], b"both");
    drop(b1);
    eventually(&node, "one b left", |s| s.clients_connected == 2).await;
    a.send(&b_addr, b"one").await;
    assert_eq!(&b2.recv().await.payload[..], b"one");
    node.shutdown().await;
}

#[tokio::test]
async fn offline_destination_held_only_when_asked() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let offline = address(&key(2), "later");
    let m = a.outbound(&[&offline], &[b"dropped"], 0);
    a.send_outbound(&m, false).await;
    let m = a.outbound(&[&offline], &[b"held"], 30);
    a.send_outbound(&m, false).await;
    eventually(&node, "one dropped, one held", |s| {
        s.dropped_offline == 1 && s.held_now == 1
    })
    .await;
    let mut b = Client::connect(&node, key(2), "later").await;
    let m = b.recv().await;
    assert_eq!(&m.payload[..], b"held");
    assert_eq!(m.src, a.addr);
    assert!(b.recv_within(Duration::from_millis(200)).await.is_none());
    let s = node.stats();
    assert_eq!((s.held, s.held_delivered, s.held_now, s.relayed), (1, 1, 0, 1));
    node.shutdown().await;
}

#[tokio::test]
async fn held_messages_expire_and_respect_caps() {
    let cfg = NodeConfig {
        max_holding_seconds: 1,
        max_held_messages: 2,
        ..Default::default()
    };
    let node = LocalNode::start(cfg).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let offline = address(&key(2), "");
    for i in 0..3u8 {
        let m = a.outbound(&[&offline], &[&[i]], 3600); // clipped to 1 s
        a.send_outbound(&m, false).await;
    }
    eventually(&node, "two held, one over the cap", |s| {
        s.held == 2 && s.dropped_hold_full == 1
    })
    .await;
    eventually(&node, "expired", |s| s.held_expired == 2 && s.held_now == 0).await;
    let mut b = Client::connect(&node, key(2), "").await;
    assert!(b.recv_within(Duration::from_millis(200)).await.is_none());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_knob_drops_about_the_configured_share() {
    let cfg = NodeConfig {
        loss: 0.3,
        loss_seed: Some(42),
        ..Default::default()
    };
    let node = LocalNode::start(cfg).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let mut b = Client::connect(&node, key(2), "").await;
    let b_addr = b.addr.clone();
    // b keeps reading (and so answers the node's pings) while a sends.
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while b.recv_within(Duration::from_secs(2)).await.is_some() {
            got += 1;
        }
        got
    });
    const N: u64 = 500;
    for i in 0..N {
        a.send(&b_addr, &i.to_le_bytes()).await;
    }
    eventually(&node, "all decided", |s| s.relayed + s.dropped_loss == N).await;
    let s = node.stats();
    // Binomial(500, 0.3): mean 150, sd ≈ 10.2; ±5 sd.
    assert!((99..=201).contains(&s.dropped_loss), "{s:?}");
    assert_eq!(reader.await.unwrap(), s.relayed);
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_clients() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let rpc_addr = node.rpc_addr();
    tokio::time::timeout(T, node.shutdown()).await.expect("shutdown hangs");
    assert_eq!(closed(&mut a.ws).await, Some(1001));
    assert!(TcpStream::connect(rpc_addr).await.is_err());
}

#[tokio::test]
async fn pings_keep_readers_and_drop_silent_clients() {
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let mut a = Client::connect(&node, key(1), "").await;
    let _b = Client::connect(&node, key(2), "").await; // never read again: no pongs
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(11);
    while let Ok(f) = tokio::time::timeout_at(until, a.ws.next()).await {
        match f {
            Some(Ok(WsMessage::Ping(_))) => pings += 1, // tungstenite answers it
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 1, "the node pings every 8 s");
    let s = node.stats();
    assert_eq!((s.ws_connections, s.clients_connected), (2, 1), "{s:?}");
    node.shutdown().await;
}
