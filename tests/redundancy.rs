//! A client gateway and an end gateway joined by two TCP paths (each
//! through a fault relay), with real tonic clients and servers: every RPC
//! shape in each mode, paths killed, black-holed and re-admitted under
//! load, chains of gateways, and the cookie rules of the merge handshake.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::Code;

use common::echo::*;
use common::faultproxy::FaultProxy;
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::gateway::{Gateway, UpstreamKind};
use resi::grpc::Code as RCode;
use resi::path::tcp;
use resi::proto::{esi, resi as rp, HOP_INFO_EXTENSION_ID, REDUNDANCY_EXTENSION_ID};
use resi::session::client::{modify_request, open_request, redundancy_answer};
use resi::session::{Mode, SessionConfig, SessionHandle};

async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f).await.expect("test timed out");
}

const DEAD: Duration = Duration::from_millis(500);

fn resi_config(name: &str, mode: Mode) -> ResiConfig {
    ResiConfig {
        name: name.into(),
        mode,
        heartbeat_interval: Duration::from_millis(100),
        dead_timeout: DEAD,
        redial_max_backoff: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(3),
        ..ResiConfig::default()
    }
}

fn gateway(name: &str, mode: Mode, listen: usize, upstream: Vec<String>) -> Gateway {
    let config = Config {
        tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into(); listen], address: upstream }),
        resi: resi_config(name, mode),
        ..Config::default()
    };
    Gateway::start(config).expect("gateway starts")
}

/// ESI server ← end gateway ⇐ two relayed TCP paths ⇐ client gateway.
struct Pair {
    _server: TestServer,
    end: Gateway,
    client: Gateway,
    proxies: Vec<FaultProxy>,
}

impl Pair {
    async fn start(mode: Mode) -> Pair {
        let server = start_echo_esi(&[]).await;
        let end = gateway("end", mode, 2, vec![server.addr.to_string()]);
        let addrs = end.local_addrs();
        let mut proxies = vec![];
        for addr in &addrs {
            proxies.push(FaultProxy::start(*addr).await);
        }
        let upstream = proxies.iter().map(|p| p.addr().to_string()).collect();
        let client = gateway("client", mode, 1, upstream);
        let pair = Pair { _server: server, end, client, proxies };
        pair.wait_live(2).await;
        pair
    }

    fn addr(&self) -> SocketAddr {
        self.client.local_addrs()[0]
    }

    fn session(&self) -> SessionHandle {
        self.client.upstream_session().expect("client gateway has a session")
    }

    async fn wait_live(&self, n: usize) {
        common::wait_live(&self.client, n).await
    }
}

fn msg(body: &[u8], count: u32, note: &str) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count, note: note.into() }
}

async fn all_four_shapes(addr: SocketAddr) {
    let mut c = echo_client(addr).await;
    // Unary with metadata both ways.
    let mut req = tonic::Request::new(msg(b"unary", 0, ""));
    req.metadata_mut().insert("x-ascii", MetadataValue::from_static("hello"));
    req.metadata_mut().insert_bin("x-blob-bin", MetadataValue::from_bytes(&[0, 1, 255]));
    let rsp = c.unary(req).await.unwrap();
    assert_eq!(rsp.metadata().get("x-ascii").unwrap(), "hello");
    assert_eq!(rsp.into_inner().body.as_ref(), b"unary");
    // Client streaming.
    let parts: Vec<Msg> = (0..50u8).map(|i| msg(&[i; 1000], 0, "")).collect();
    let expect_hash = parts.iter().fold(FNV_START, |h, m| fnv(&m.body, h));
    let rsp = c.client_stream(tokio_stream::iter(parts)).await.unwrap().into_inner();
    assert_eq!(rsp.count, 50);
    assert_eq!(rsp.note, format!("50000:{expect_hash:x}"));
    // Server streaming.
    let mut s = c.server_stream(msg(b"tick", 20, "")).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!((m.count, m.body.as_ref()), (n, &b"tick"[..]));
        n += 1;
    }
    assert_eq!(n, 20);
    // Bidirectional.
    let out: Vec<Msg> = (0..30u32).map(|i| msg(format!("m{i}").as_bytes(), i, "")).collect();
    let mut s = c.bidi(tokio_stream::iter(out)).await.unwrap().into_inner();
    let mut i = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!(m.body.as_ref(), format!("m{i}").as_bytes());
        i += 1;
    }
    assert_eq!(i, 30);
    // An error status with details passes through the session.
    let err = c.unary(msg(b"details", Code::FailedPrecondition as u32, "error")).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.details(), b"details");
    // 16 MiB each way.
    let big = pattern(16 << 20, 3);
    let rsp = c.unary(Msg { body: big.clone(), count: 0, note: String::new() }).await.unwrap().into_inner();
    assert!(rsp.body == big, "16 MiB message corrupted");
}

#[tokio::test]
async fn all_rpc_shapes_cross_two_tcp_paths_in_each_mode() {
    bounded(60, async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let pair = Pair::start(mode).await;
            assert!(matches!(pair.client.upstream_kind(), Some(UpstreamKind::Resi { paths: 2, .. })));
            all_four_shapes(pair.addr()).await;
            let stats = pair.session().stats().await.unwrap();
            assert_eq!(stats.mode, mode);
            for p in &stats.paths {
                assert!(p.live, "{p:?}");
                // Strict sends every byte on every path; permissive lets a
                // lagging path skip what the peer already acknowledged.
                if mode == Mode::Strict {
                    assert!(p.stats.data_bytes_sent > 16 << 20, "path {} carried too little: {p:?}", p.path);
                }
            }
            let total: u64 = stats.paths.iter().map(|p| p.stats.first_bytes).sum();
            assert!(total > 16 << 20, "{stats:?}");
            assert_eq!(pair.end.sessions().session_count(), 1);
            pair.client.shutdown().await;
            pair.end.shutdown().await;
        }
    })
    .await
}

/// Runs `calls` unary calls, 16 at a time; the fault runs once a third is done.
async fn load_with_fault<F: Future<Output = ()>>(addr: SocketAddr, calls: u32, fault: F) -> u32 {
    let c = echo_client(addr).await;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(calls as usize);
    let load = tokio::spawn(async move {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = vec![];
        for i in 0..calls {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let mut c = c.clone();
            let done = done_tx.clone();
            tasks.push(tokio::spawn(async move {
                let body = pattern(2000 + i as usize * 7, i as u8);
                let rsp = c.unary(Msg { body: body.clone(), count: i, note: String::new() }).await;
                drop(permit);
                let _ = done.send(()).await;
                match rsp {
                    Ok(r) if r.get_ref().body == body => 1u32,
                    Ok(_) => panic!("call {i}: wrong body"),
                    Err(e) => panic!("call {i} failed: {e}"),
                }
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        ok
    });
    for _ in 0..calls / 3 {
        done_rx.recv().await;
    }
    fault.await;
    load.await.unwrap()
}

#[tokio::test]
async fn a_path_killed_mid_load_loses_no_call() {
    bounded(60, async {
        for mode in [Mode::Permissive, Mode::Strict] {
            let pair = Pair::start(mode).await;
            let ok = load_with_fault(pair.addr(), 600, async { pair.proxies[0].kill() }).await;
            assert_eq!(ok, 600, "{mode:?}");
            let stats = pair.session().stats().await.unwrap();
            assert!(!stats.paths[0].live || stats.paths[0].stats.admissions > 1);
        }
    })
    .await
}

#[tokio::test]
async fn a_black_holed_path_stalls_strict_calls_no_longer_than_the_dead_timeout() {
    bounded(60, async {
        let pair = Pair::start(Mode::Strict).await;
        let mut c = echo_client(pair.addr()).await;
        c.unary(msg(b"warm", 0, "")).await.unwrap();
        pair.proxies[1].blackhole();
        let start = Instant::now();
        let rsp = c.unary(msg(b"through", 0, "")).await.unwrap();
        let stall = start.elapsed();
        assert_eq!(rsp.into_inner().body.as_ref(), b"through");
        assert!(stall <= DEAD + Duration::from_millis(400), "call stalled {stall:?} (dead timeout {DEAD:?})");
        // Later calls do not wait at all.
        let start = Instant::now();
        c.unary(msg(b"after", 0, "")).await.unwrap();
        assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
        // Healed, the path comes back.
        pair.proxies[1].heal();
        pair.wait_live(2).await;
        c.unary(msg(b"healed", 0, "")).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_readmitted_path_carries_the_session_when_the_other_dies() {
    bounded(60, async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let pair = Pair::start(mode).await;
            let mut c = echo_client(pair.addr()).await;
            pair.proxies[1].kill();
            c.unary(msg(b"one path", 0, "")).await.unwrap();
            pair.proxies[1].heal();
            pair.wait_live(2).await;
            pair.proxies[0].kill();
            let rsp = c.unary(msg(b"readmitted", 0, "")).await.unwrap();
            assert_eq!(rsp.into_inner().body.as_ref(), b"readmitted");
            let stats = pair.session().stats().await.unwrap();
            assert!(stats.paths[1].stats.admissions >= 2, "{stats:?}");
            all_four_shapes(pair.addr()).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_outage_of_every_path_is_survived() {
    bounded(60, async {
        let pair = Pair::start(Mode::Strict).await;
        let mut c = echo_client(pair.addr()).await;
        c.unary(msg(b"before", 0, "")).await.unwrap();
        let id = pair.session().id();
        pair.proxies[0].kill();
        pair.proxies[1].kill();
        let call = tokio::spawn(async move { c.unary(msg(b"during", 0, "")).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        pair.proxies[0].heal();
        pair.proxies[1].heal();
        let rsp = call.await.unwrap().unwrap();
        assert_eq!(rsp.into_inner().body.as_ref(), b"during");
        assert_eq!(pair.session().id(), id, "the same session resumed");
    })
    .await
}

#[tokio::test]
async fn modify_rules_hold_across_the_pair() {
    bounded(30, async {
        let pair = Pair::start(Mode::Permissive).await;
        let server = start_echo_esi(&[77]).await;
        let end = gateway("end2", Mode::Permissive, 1, vec![server.addr.to_string()]);
        let client = gateway("client2", Mode::Permissive, 1, vec![end.local_addrs()[0].to_string()]);
        let mut esi_c = esi_client(client.local_addrs()[0]).await;
        // Known at the first hop.
        let rsp = esi_c.modify(modify_req(HOP_INFO_EXTENSION_ID, false, b"")).await.unwrap().into_inner();
        let info = rp::HopInfo::decode(rsp.ext.unwrap().data).unwrap();
        assert_eq!(info.name, "client2");
        // Unknown with pass = true travels through both gateways to the server.
        // (The server already saw the end gateway's discovery probe.)
        let calls = || server.counters.modify_calls.load(std::sync::atomic::Ordering::SeqCst);
        let before = calls();
        let rsp = esi_c.modify(modify_req(77, true, b"x")).await.unwrap().into_inner();
        assert_eq!(rsp.ext.unwrap().data.as_ref(), b"esi-server:x");
        assert_eq!(calls(), before + 1);
        // Unknown with pass = false is refused at the first hop, naming the id.
        let err = esi_c.modify(modify_req(78, false, b"")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert!(err.message().contains("78"), "{}", err.message());
        // Unknown with pass = true and unknown at the server: the server's answer.
        let err = esi_c.modify(modify_req(79, true, b"")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert_eq!(calls(), before + 2, "pass=false must not have left the first hop");
        drop(pair);
    })
    .await
}

#[tokio::test]
async fn a_chain_of_gateways_carries_every_shape() {
    bounded(60, async {
        let server = start_echo_esi(&[]).await;
        let gw3 = gateway("gw3", Mode::Strict, 2, vec![server.addr.to_string()]);
        let up3 = gw3.local_addrs().iter().map(|a| a.to_string()).collect();
        let gw2 = gateway("gw2", Mode::Permissive, 2, up3);
        let up2 = gw2.local_addrs().iter().map(|a| a.to_string()).collect();
        let gw1 = gateway("gw1", Mode::Strict, 1, up2);
        all_four_shapes(gw1.local_addrs()[0]).await;
        assert!(matches!(gw1.upstream_kind(), Some(UpstreamKind::Resi { .. })));
        assert!(matches!(gw2.upstream_kind(), Some(UpstreamKind::Resi { .. })));
        assert!(matches!(gw3.upstream_kind(), Some(UpstreamKind::Plain { .. })));
    })
    .await
}

/// Opens a session at `gw` through gRPC Modify, as a client gateway does.
async fn open_session(gw: SocketAddr, cookies: usize) -> rp::OpenResponse {
    let cfg = SessionConfig::default();
    let req = modify_request(rp::redundancy::Msg::Open(open_request(&cfg, cookies)));
    let req = ModifyRequest { ext: req.ext.map(|e| Extension { id: e.id, pass: e.pass, data: e.data }) };
    let rsp = esi_client(gw).await.modify(req).await.unwrap().into_inner();
    let rsp = esi::ModifyResponse { ext: rsp.ext.map(|e| esi::Extension { id: e.id, pass: e.pass, data: e.data }) };
    match redundancy_answer(&rsp).unwrap() {
        rp::redundancy::Msg::Opened(o) => o,
        other => panic!("not opened: {other:?}"),
    }
}

/// Presents `cookie` in a merge on a fresh TCP path; the reply's status.
async fn merge(gw: SocketAddr, cookie: Bytes) -> Result<rp::MergeResponse, (RCode, String)> {
    let hello = modify_request(rp::redundancy::Msg::Merge(rp::MergeRequest { cookie, path_id: 0, ..Default::default() }));
    let (_stream, _, reply) = tcp::dial(&gw.to_string(), hello.encode_to_vec().into(), Duration::from_secs(5)).await.unwrap();
    match rp::HelloReply::decode(reply).unwrap().result.unwrap() {
        rp::hello_reply::Result::Response(body) => match redundancy_answer(&esi::ModifyResponse::decode(body).unwrap()).unwrap() {
            rp::redundancy::Msg::Merged(m) => Ok(m),
            other => panic!("{other:?}"),
        },
        rp::hello_reply::Result::Error(s) => Err((RCode::from_i32(s.code), s.message)),
    }
}

#[tokio::test]
async fn merge_cookies_are_random_single_use_and_checked() {
    bounded(30, async {
        let server = start_echo_esi(&[]).await;
        let end = gateway("end", Mode::Strict, 1, vec![server.addr.to_string()]);
        let gw = end.local_addrs()[0];
        let opened = open_session(gw, 3).await;
        assert_eq!(opened.cookies.len(), 3);
        assert!(opened.cookies.iter().all(|c| c.len() >= 16), "cookies shorter than 128 bits");
        assert_ne!(opened.cookies[0], opened.cookies[1]);
        let merged = merge(gw, opened.cookies[0].clone()).await.expect("a fresh cookie merges");
        assert!(merged.next_cookie.len() >= 16);
        let (code, message) = merge(gw, opened.cookies[0].clone()).await.unwrap_err();
        assert_eq!((code, message.as_str()), (RCode::PermissionDenied, "merge cookie already used"));
        let (code, message) = merge(gw, Bytes::from(vec![0xab; 24])).await.unwrap_err();
        assert_eq!((code, message.as_str()), (RCode::Unauthenticated, "unknown merge cookie"));
        // A cookie of another session does not join this one: each names its own.
        let other = open_session(gw, 1).await;
        assert_ne!(other.session_id, opened.session_id);
        merge(gw, other.cookies[0].clone()).await.expect("merges into its own session");
        assert_eq!(end.sessions().session_count(), 2);
        // The listener still serves plain gRPC after all this.
        let mut c = echo_client(gw).await;
        c.unary(msg(b"still fine", 0, "")).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn merge_cookies_expire() {
    bounded(30, async {
        let server = start_echo_esi(&[]).await;
        let mut resi = resi_config("end", Mode::Strict);
        resi.cookie_ttl = Duration::from_millis(300);
        let config = Config {
            tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![server.addr.to_string()] }),
            resi,
            ..Config::default()
        };
        let end = Gateway::start(config).unwrap();
        let gw = end.local_addrs()[0];
        let opened = open_session(gw, 2).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (code, message) = merge(gw, opened.cookies[0].clone()).await.unwrap_err();
        assert_eq!(code, RCode::Unauthenticated);
        assert!(message.contains("expired") || message.contains("unknown"), "{message}");
    })
    .await
}

#[tokio::test]
async fn garbage_on_a_path_ends_that_path_only() {
    bounded(30, async {
        let pair = Pair::start(Mode::Permissive).await;
        let mut c = echo_client(pair.addr()).await;
        // A forged path: right preface, then nonsense instead of a HELLO.
        let mut s = tokio::net::TcpStream::connect(pair.end.local_addrs()[0]).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(tcp::PREFACE).await.unwrap();
        s.write_all(&[0xff; 64]).await.unwrap();
        // An oversized HELLO.
        let mut s2 = tokio::net::TcpStream::connect(pair.end.local_addrs()[1]).await.unwrap();
        s2.write_all(tcp::PREFACE).await.unwrap();
        s2.write_all(&[5, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]).await.unwrap();
        let rsp = c.unary(msg(b"unaffected", 0, "")).await.unwrap();
        assert_eq!(rsp.into_inner().body.as_ref(), b"unaffected");
        let stats = pair.session().stats().await.unwrap();
        assert!(stats.paths.iter().all(|p| p.live));
        let _ = REDUNDANCY_EXTENSION_ID;
    })
    .await
}

#[tokio::test]
async fn the_stream_api_works_on_a_gateway_session() {
    bounded(30, async {
        let pair = Pair::start(Mode::Strict).await;
        let mut events = pair.session().subscribe();
        pair.proxies[0].kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut saw_down = false;
        while Instant::now() < deadline && !saw_down {
            if let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                saw_down = matches!(ev, resi::session::machine::Event::PathDown { path: 0, .. });
            }
        }
        assert!(saw_down, "no PathDown event");
        let _ = tokio_stream::iter(Vec::<u8>::new()).next().await;
    })
    .await
}

/// An end gateway listening on the given addresses (so a restarted one
/// takes the same ports), with no shutdown grace (a killed process has none).
fn end_gateway_at(mode: Mode, listen: &[SocketAddr], upstream: SocketAddr) -> Gateway {
    let config = Config {
        tcp: Some(TcpConfig { listen: listen.iter().map(|a| a.to_string()).collect(), address: vec![upstream.to_string()] }),
        resi: ResiConfig { shutdown_grace: Duration::ZERO, ..resi_config("end", mode) },
        ..Config::default()
    };
    Gateway::start(config).expect("end gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_end_gateway_restart_calls_through_the_same_client_gateway_succeed_within_two_seconds() {
    bounded(60, async {
        let server = start_echo_esi(&[]).await;
        let ports = [free_addr().await, free_addr().await];
        let end = end_gateway_at(Mode::Strict, &ports, server.addr);
        // The relays stand for the network: killing them first means the
        // old end gateway's Close never arrives, as after a kill -9.
        let proxies = [FaultProxy::start(ports[0]).await, FaultProxy::start(ports[1]).await];
        let client = gateway("client", Mode::Strict, 1, proxies.iter().map(|p| p.addr().to_string()).collect());
        common::wait_live(&client, 2).await;
        let mut c = echo_client(client.local_addrs()[0]).await;
        assert_eq!(c.unary(msg(b"before", 0, "")).await.unwrap().into_inner().body, Bytes::from_static(b"before"));
        let old = client.upstream_session().expect("a session");
        let mut in_flight = c.clone();
        let in_flight = tokio::spawn(async move { in_flight.unary(msg(b"lost", 0, "slow:20000")).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        for p in &proxies {
            p.kill();
        }
        end.shutdown().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _end = end_gateway_at(Mode::Strict, &ports, server.addr);
        for p in &proxies {
            p.heal();
        }
        let listening = Instant::now();
        // The old cookies are refused by the new gateway: the old session
        // ends at once and its call in flight fails fast.
        let err = in_flight.await.unwrap().expect_err("the call in flight cannot complete");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(listening.elapsed() < Duration::from_secs(3), "the call in flight hung for {:?}", listening.elapsed());
        assert_eq!(old.close_reason(), Some(resi::session::SessionError::OutOfCookies));
        let answer = c.unary(msg(b"after", 0, "")).await.expect("a call over the new session");
        assert_eq!(answer.into_inner().body, Bytes::from_static(b"after"));
        let took = listening.elapsed();
        println!("calls succeed again {took:?} after the restarted end gateway listens");
        assert!(took < Duration::from_secs(2), "calls came back only after {took:?}");
    })
    .await;
}

/// A client gateway named "client" listening on `listen` (so a restarted
/// one takes the same port), with no shutdown grace.
fn client_gateway_at(listen: SocketAddr, upstream: Vec<String>) -> Gateway {
    let config = Config {
        tcp: Some(TcpConfig { listen: vec![listen.to_string()], address: upstream }),
        resi: ResiConfig { shutdown_grace: Duration::ZERO, ..resi_config("client", Mode::Strict) },
        ..Config::default()
    };
    Gateway::start(config).expect("client gateway starts")
}

/// Waits (at most `within`) until `end` holds `n` sessions; how long it took.
async fn sessions_become(end: &Gateway, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    while end.sessions().session_count() != n {
        let count = end.sessions().session_count();
        assert!(start.elapsed() < within, "the end gateway still holds {count} sessions after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_client_gateway_restart_the_end_gateway_frees_the_old_session_within_two_seconds() {
    bounded(60, async {
        let server = start_echo_esi(&[]).await;
        // The end gateway keeps a session with no path for 30 s (the default).
        let end = gateway("end", Mode::Strict, 2, vec![server.addr.to_string()]);
        let proxies = [FaultProxy::start(end.local_addrs()[0]).await, FaultProxy::start(end.local_addrs()[1]).await];
        let upstream: Vec<String> = proxies.iter().map(|p| p.addr().to_string()).collect();
        let listen = free_addr().await;
        let client = client_gateway_at(listen, upstream.clone());
        common::wait_live(&client, 2).await;
        let mut c = echo_client(listen).await;
        assert_eq!(c.unary(msg(b"before", 0, "")).await.unwrap().into_inner().body, Bytes::from_static(b"before"));
        let old = end.sessions().sessions().pop().expect("the end gateway holds the session");
        assert_eq!(end.sessions().session_count(), 1);

        // As after a kill -9: every path closes, and no Close arrives (the
        // relays are dead while the old gateway stops).
        for p in &proxies {
            p.kill();
        }
        client.shutdown().await;
        sessions_become(&end, 1, Duration::from_secs(5)).await;
        assert!(!old.is_closed(), "an outage of every path alone must not end the session");
        for p in &proxies {
            p.heal();
        }
        let restarted = Instant::now();
        let client = client_gateway_at(listen, upstream);
        let mut c = echo_client(listen).await;
        assert_eq!(c.unary(msg(b"after", 0, "")).await.unwrap().into_inner().body, Bytes::from_static(b"after"));
        let freed = restarted.elapsed().max(sessions_become(&end, 1, Duration::from_secs(2)).await);
        assert!(freed < Duration::from_secs(2), "the old session was freed only after {freed:?}");
        println!("the old session was freed {freed:?} after the restarted client gateway started");
        assert!(matches!(old.close_reason(), Some(resi::session::SessionError::Superseded { .. })), "{:?}", old.close_reason());
        assert_eq!(end.sessions().superseded_count(), 1);
        let new = client.upstream_session().expect("the new session");
        assert_ne!(new.id(), old.id());
        assert_eq!(end.sessions().sessions().pop().map(|s| s.id()), Some(new.id()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_running_client_gateways_with_one_name_keep_both_sessions() {
    bounded(60, async {
        let server = start_echo_esi(&[]).await;
        let end = gateway("end", Mode::Strict, 2, vec![server.addr.to_string()]);
        let upstream: Vec<String> = end.local_addrs().iter().map(|a| a.to_string()).collect();
        let first = client_gateway_at(free_addr().await, upstream.clone());
        common::wait_live(&first, 2).await;
        let second = client_gateway_at(free_addr().await, upstream);
        common::wait_live(&second, 2).await;
        // Past the second look (one dead timeout after the Open).
        tokio::time::sleep(DEAD * 3).await;
        assert_eq!(end.sessions().session_count(), 2, "a running gateway's session was ended");
        assert_eq!(end.sessions().superseded_count(), 0);
        for gw in [&first, &second] {
            assert!(!gw.upstream_session().expect("a session").is_closed());
            let mut c = echo_client(gw.local_addrs()[0]).await;
            assert_eq!(c.unary(msg(b"both", 0, "")).await.unwrap().into_inner().body, Bytes::from_static(b"both"));
        }
    })
    .await;
}
