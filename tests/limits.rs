//! Connection and message limits through real sockets: the handshake
//! deadline (stalled HTTP/2 prefaces, silent connections, RESI prefaces
//! without HELLO), `MaxConnections` under a flood of stalled connections,
//! idle connections, and `MaxMessageSize` on every forwarded message in
//! both directions, alone and through a gateway pair.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::gateway::{Gateway, UpstreamKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use common::echo::*;

const MIB: usize = 1 << 20;
/// The handshake deadline of the deadline tests.
const DEADLINE: Duration = Duration::from_millis(600);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out");
}

fn config(upstream: &str, f: impl FnOnce(&mut ResiConfig)) -> Config {
    let mut resi = ResiConfig {
        name: "limits".into(),
        connect_timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(100),
        dead_timeout: Duration::from_millis(500),
        shutdown_grace: Duration::from_millis(300),
        ..ResiConfig::default()
    };
    f(&mut resi);
    Config {
        source: None,
        tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![upstream.to_string()] }),
        nkn: None,
        resi,
        reverse: None,
        tls: None,
        metrics: None,
    }
}

fn gateway(upstream: SocketAddr, f: impl FnOnce(&mut ResiConfig)) -> Gateway {
    Gateway::start(config(&upstream.to_string(), f)).expect("gateway starts")
}

fn addr(g: &Gateway) -> SocketAddr {
    g.local_addrs()[0]
}

fn msg(body: &[u8], count: u32, note: &str) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count, note: note.into() }
}

/// Reads (and discards whatever the gateway sends, such as its SETTINGS)
/// until the gateway closes the connection; returns how long that took
/// from `since`.
async fn closed_after(mut s: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after 10 s"),
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test]
async fn stalled_handshakes_are_closed_by_the_deadline() {
    bounded(async {
        let up = start_echo().await;
        let gw = gateway(up.addr, |r| r.handshake_timeout = DEADLINE);
        let a = addr(&gw);
        let settings_header = [0u8, 0, 6, 4, 0, 0, 0, 0, 0];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("silent", vec![]),
            ("partial HTTP/2 preface", H2_PREFACE[..10].to_vec()),
            ("HTTP/2 preface without SETTINGS", H2_PREFACE.to_vec()),
            ("SETTINGS header without its body", [H2_PREFACE, &settings_header[..]].concat()),
            ("partial RESI preface", b"RES".to_vec()),
            ("RESI preface without HELLO", b"RESI\r\n\x00\x02".to_vec()),
            ("RESI preface and part of a HELLO", b"RESI\r\n\x00\x02\x05\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x00abc".to_vec()),
        ];
        let mut waits = vec![];
        for (name, bytes) in cases {
            let t = Instant::now();
            let mut s = TcpStream::connect(a).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            waits.push(tokio::spawn(async move { (name, closed_after(s, t).await) }));
        }
        for w in waits {
            let (name, took) = w.await.unwrap();
            eprintln!("{name}: closed after {took:?}");
            assert!(took >= DEADLINE - Duration::from_millis(50), "{name}: closed too early ({took:?})");
            assert!(took < DEADLINE + Duration::from_millis(1500), "{name}: closed late ({took:?})");
        }
        // A genuine client is not held to the deadline once greeted.
        let mut c = echo_client(a).await;
        c.unary(msg(b"x", 0, "")).await.unwrap();
        tokio::time::sleep(DEADLINE * 2).await;
        c.unary(msg(b"still", 0, "")).await.unwrap();
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stalled_connections_do_not_lock_out_clients() {
    bounded(async {
        let up = start_echo().await;
        let gw = gateway(up.addr, |r| {
            r.handshake_timeout = Duration::from_secs(1);
            r.max_connections = 20;
        });
        let a = addr(&gw);
        // Twice as many stalled connections as the gateway serves: the
        // ones over the limit are closed at once, the others at the deadline.
        let t = Instant::now();
        let mut stalled = vec![];
        for i in 0..40 {
            let mut s = TcpStream::connect(a).await.unwrap();
            s.write_all(&H2_PREFACE[..i % 24]).await.unwrap();
            stalled.push(s);
        }
        let waits: Vec<_> = stalled.into_iter().map(|s| tokio::spawn(closed_after(s, t))).collect();
        // A genuine client gets through by the deadline (retrying while full).
        let mut served = None;
        while served.is_none() {
            assert!(t.elapsed() < Duration::from_secs(4), "client locked out");
            if let Ok(Ok(ch)) = tokio::time::timeout(
                Duration::from_millis(500),
                tonic::transport::Endpoint::from_shared(format!("http://{a}")).unwrap().connect(),
            )
            .await
            {
                let mut c = EchoClient::new(ch);
                if c.unary(msg(b"me", 0, "")).await.is_ok() {
                    served = Some(t.elapsed());
                }
            }
        }
        eprintln!("genuine client served after {:?}", served.unwrap());
        let mut early = 0;
        for w in waits {
            let took = w.await.unwrap();
            assert!(took < Duration::from_secs(3), "a stalled connection outlived the deadline: {took:?}");
            if took < Duration::from_millis(500) {
                early += 1;
            }
        }
        assert!(early >= 20, "only {early} connections over the limit were refused at once");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn idle_connections_get_goaway_but_quiet_streams_stay() {
    bounded(async {
        let up = start_echo().await;
        let gw = gateway(up.addr, |r| r.idle_timeout = Duration::from_secs(1));
        let a = addr(&gw);
        // A bare HTTP/2 connection: one call, then nothing.
        let tcp = TcpStream::connect(a).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        let driver = tokio::spawn(conn);
        let req = http::Request::post(format!("http://{a}/resitest.Echo/Unary"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap();
        let rsp = tx.send_request(req).await.unwrap();
        http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap();
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), driver).await.expect("idle connection not closed").unwrap().ok();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "closed after {took:?}");

        // A server stream quiet for longer than the idle timeout keeps going.
        let mut c = echo_client(a).await;
        let mut s = c.server_stream(msg(b"tick", 2, "slow:1500")).await.unwrap().into_inner();
        assert_eq!(s.message().await.unwrap().unwrap().count, 0);
        assert_eq!(s.message().await.unwrap().unwrap().count, 1);
        assert!(s.message().await.unwrap().is_none());
        gw.shutdown().await;
    })
    .await;
}

/// Waits (at most 5 s) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(5), "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_exhausted(st: &tonic::Status, what: &str) {
    assert_eq!(st.code(), Code::ResourceExhausted, "{what}: {st:?}");
    assert!(st.message().contains("MaxMessageSize (1048576 bytes)"), "{what}: {st:?}");
}

/// Every shape with an oversized message each way through `entry` (the
/// limit is 1 MiB), while a slow call on the same channel is in flight;
/// it must succeed, and so must a call after.
async fn oversized_each_way(entry: SocketAddr, up: &TestServer) {
    let mut c = echo_client(entry).await;
    let mut slow_c = c.clone();
    let slow = tokio::spawn(async move { slow_c.unary(msg(b"slow", 7, "slow:1500")).await });
    let big = pattern(2 * MIB, 3);

    let st = c.unary(msg(&big, 0, "")).await.unwrap_err();
    assert_exhausted(&st, "unary request");
    assert!(st.message().starts_with("request message"), "{st:?}");

    let st = c.unary(msg(b"small", 0, &format!("grow:{}", 2 * MIB))).await.unwrap_err();
    assert_exhausted(&st, "unary response");
    assert!(st.message().starts_with("response message"), "{st:?}");

    // A client stream: small messages reach the upstream handler, then an
    // oversized one fails the call and resets the upstream stream.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut cs = c.clone();
    let call = tokio::spawn(async move { cs.client_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    let calls_before = up.counters.echo_calls.load(Ordering::SeqCst);
    tx.send(msg(&[1; 1000], 0, "")).await.unwrap();
    tx.send(msg(&[2; 1000], 1, "")).await.unwrap();
    eventually("upstream handler starts", || up.counters.echo_calls.load(Ordering::SeqCst) > calls_before).await;
    let broken_before = up.counters.broken_streams.load(Ordering::SeqCst);
    let _ = tx.send(msg(&big, 2, "")).await;
    assert_exhausted(&call.await.unwrap().unwrap_err(), "client stream");
    eventually("upstream stream reset", || up.counters.broken_streams.load(Ordering::SeqCst) > broken_before).await;
    drop(tx);

    let mut s = c.server_stream(msg(b"first", 3, &format!("grow:{}", 2 * MIB))).await.unwrap().into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().body.as_ref(), b"first");
    assert_exhausted(&s.message().await.unwrap_err(), "server stream");

    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut b = c.bidi(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(msg(b"ping", 0, "")).await.unwrap();
    assert_eq!(b.message().await.unwrap().unwrap().body.as_ref(), b"ping");
    tx.send(msg(&big, 1, "")).await.unwrap();
    assert_exhausted(&b.message().await.unwrap_err(), "bidi request");

    // Just under the limit passes both ways.
    let fits = pattern(MIB - 64, 5);
    assert!(c.unary(msg(&fits, 0, "")).await.unwrap().into_inner().body == fits);
    let rsp = slow.await.unwrap().expect("the concurrent call on the same channel");
    assert_eq!(rsp.into_inner().count, 7);
    c.unary(msg(b"after", 0, "")).await.unwrap();
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_each_way() {
    bounded(async {
        let up = start_echo().await;
        let gw = gateway(up.addr, |r| r.max_message_size = MIB);
        oversized_each_way(addr(&gw), &up).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_messages_through_a_gateway_pair_leave_the_session_up() {
    bounded(async {
        let up = start_echo().await;
        let end = gateway(up.addr, |r| r.max_message_size = MIB);
        let end_addr = addr(&end).to_string();
        let cfg = Config {
            tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![end_addr.clone(), end_addr] }),
            ..config("unused", |r| r.max_message_size = MIB)
        };
        let client = Gateway::start(cfg).unwrap();
        let t = Instant::now();
        let session = loop {
            if let (Some(UpstreamKind::Resi { .. }), Some(s)) = (client.upstream_kind(), client.upstream_session()) {
                break s;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no session");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let live = |stats: Option<resi::session::driver::SessionStats>| {
            stats.map_or(0, |s| s.paths.iter().filter(|p| p.live).count())
        };
        while live(session.stats().await) < 2 {
            assert!(t.elapsed() < Duration::from_secs(10), "paths not up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        oversized_each_way(addr(&client), &up).await;
        assert!(!session.is_closed());
        assert_eq!(live(session.stats().await), 2, "a path went down");
        let same = client.upstream_session().expect("still a session").id();
        assert_eq!(same, session.id(), "the session was replaced");
        client.shutdown().await;
        end.shutdown().await;
    })
    .await;
}
