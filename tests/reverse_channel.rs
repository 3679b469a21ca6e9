//! Calls in both directions over one gateway pair: the client gateway
//! (`[Reverse] Address`) opens a reverse channel on its session, the end
//! gateway (`[Reverse] Listen`) carries the calls of its reverse listener
//! back over it. An echo server sits behind each gateway, two TCP paths
//! run through fault relays; every shape, both modes, a path killed while
//! calls run both ways, sessions replaced.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::metadata::MetadataValue;
use tonic::Code;

use common::echo::*;
use common::faultproxy::FaultProxy;
use resi::config::{Config, ResiConfig, ReverseConfig, TcpConfig};
use resi::gateway::Gateway;
use resi::session::{Mode, SessionHandle};

async fn bounded<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f).await.expect("test timed out");
}

fn resi_config(name: &str, mode: Mode) -> ResiConfig {
    ResiConfig {
        name: name.into(),
        mode,
        heartbeat_interval: Duration::from_millis(100),
        dead_timeout: Duration::from_millis(500),
        redial_max_backoff: Duration::from_millis(300),
        resume_timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(2),
        ..ResiConfig::default()
    }
}

fn gateway(name: &str, mode: Mode, tcp: TcpConfig, reverse: ReverseConfig) -> Gateway {
    let config = Config { source: None, tcp: Some(tcp), nkn: None, resi: resi_config(name, mode), reverse: Some(reverse), tls: None, metrics: None };
    Gateway::start(config).expect("gateway starts")
}

/// exchange server ← client gateway ⇐ two relayed paths ⇐ end gateway → facility server.
/// Forward calls (client gateway's listener) reach the facility server; reverse
/// calls (end gateway's reverse listener) reach the exchange server.
struct Pair {
    exchange: TestServer,
    facility: TestServer,
    end: Gateway,
    client: Gateway,
    proxies: Vec<FaultProxy>,
}

impl Pair {
    async fn start(mode: Mode) -> Pair {
        let exchange = start_echo().await;
        let facility = start_echo().await;
        let end_tcp = TcpConfig { listen: vec!["127.0.0.1:0".into(); 2], address: vec![facility.addr.to_string()] };
        let end_rev = ReverseConfig { listen: vec!["127.0.0.1:0".into()], address: vec![] };
        let end = gateway("end", mode, end_tcp, end_rev);
        let mut proxies = vec![];
        for addr in end.local_addrs() {
            proxies.push(FaultProxy::start(addr).await);
        }
        let client_tcp = TcpConfig {
            listen: vec!["127.0.0.1:0".into()],
            address: proxies.iter().map(|p| p.addr().to_string()).collect(),
        };
        let client_rev = ReverseConfig { listen: vec![], address: vec![exchange.addr.to_string()] };
        let client = gateway("client", mode, client_tcp, client_rev);
        let pair = Pair { exchange, facility, end, client, proxies };
        pair.wait_live(2).await;
        pair.wait_channel().await;
        pair
    }

    fn forward(&self) -> SocketAddr {
        self.client.local_addrs()[0]
    }

    fn reverse(&self) -> SocketAddr {
        self.end.reverse_addrs()[0]
    }

    fn session(&self) -> SessionHandle {
        self.client.upstream_session().expect("client gateway has a session")
    }

    async fn wait_live(&self, n: usize) {
        common::wait_live(&self.client, n).await
    }

    async fn wait_channel(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.end.reverse_channels() == 0 {
            assert!(Instant::now() < deadline, "no reverse channel opened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn calls(&self) -> (usize, usize) {
        (self.exchange.counters.echo_calls.load(Ordering::SeqCst), self.facility.counters.echo_calls.load(Ordering::SeqCst))
    }

    async fn shutdown(self) {
        let start = Instant::now();
        self.end.shutdown().await;
        self.client.shutdown().await;
        // The long-lived reverse request must not hold the end gateway's
        // drain for the grace period (2 s). End gateway first: a killed
        // relay connection can swallow the client's session Close, leaving
        // the end's session to wait for its resume timeout (the client-first
        // order is tested on direct paths below).
        assert!(start.elapsed() < Duration::from_millis(1500), "shutdown took {:?}", start.elapsed());
    }
}

fn msg(body: &[u8], count: u32, note: &str) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count, note: note.into() }
}

/// Every shape through `addr`; the bodies carry `tag` so a mixed-up
/// direction would show.
async fn all_four_shapes(addr: SocketAddr, tag: &str) {
    let mut c = echo_client(addr).await;
    let mut req = tonic::Request::new(msg(tag.as_bytes(), 0, ""));
    req.metadata_mut().insert("x-dir", MetadataValue::try_from(tag).unwrap());
    let rsp = c.unary(req).await.unwrap();
    assert_eq!(rsp.metadata().get("x-dir").unwrap(), tag);
    assert_eq!(rsp.into_inner().body.as_ref(), tag.as_bytes());
    let parts: Vec<Msg> = (0..40u8).map(|i| msg(&pattern(3000, i), 0, "")).collect();
    let expect_hash = parts.iter().fold(FNV_START, |h, m| fnv(&m.body, h));
    let rsp = c.client_stream(tokio_stream::iter(parts)).await.unwrap().into_inner();
    assert_eq!(rsp.note, format!("120000:{expect_hash:x}"));
    let mut s = c.server_stream(msg(tag.as_bytes(), 25, "")).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!((m.count, m.body.as_ref()), (n, tag.as_bytes()));
        n += 1;
    }
    assert_eq!(n, 25);
    let out: Vec<Msg> = (0..30u32).map(|i| msg(format!("{tag}{i}").as_bytes(), i, "")).collect();
    let mut s = c.bidi(tokio_stream::iter(out)).await.unwrap().into_inner();
    let mut i = 0;
    while let Some(m) = s.message().await.unwrap() {
        assert_eq!(m.body.as_ref(), format!("{tag}{i}").as_bytes());
        i += 1;
    }
    assert_eq!(i, 30);
    // An error status with details and trailers passes too.
    let err = c.unary(msg(b"details", 5, "error")).await.unwrap_err();
    assert_eq!((err.code(), err.details()), (Code::NotFound, &b"details"[..]));
    assert_eq!(err.metadata().get("x-trailer").unwrap(), "yes");
}

#[tokio::test]
async fn every_shape_goes_both_ways_in_each_mode() {
    bounded(60, async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let pair = Pair::start(mode).await;
            tokio::join!(all_four_shapes(pair.forward(), "fwd"), all_four_shapes(pair.reverse(), "rev"));
            assert_eq!(pair.calls(), (5, 5), "{mode:?}: one call per server per request");
            // A 16 MiB message each way through the reverse channel (nested
            // HTTP/2 flow control).
            let big = pattern(16 << 20, 3);
            let mut rc = echo_client(pair.reverse()).await;
            let rsp = rc.unary(Msg { body: big.clone(), count: 0, note: String::new() }).await.unwrap();
            assert!(rsp.into_inner().body == big, "{mode:?}: 16 MiB reply differs");
            assert_eq!(pair.calls(), (6, 5));
            assert_eq!(pair.end.sessions().session_count(), 1, "one session carries both directions");
            pair.shutdown().await;
        }
    })
    .await
}

/// `calls` unary calls through `addr`, 16 at a time; reports each finished
/// call on `done`; returns how many came back with their own body.
async fn load(addr: SocketAddr, calls: u32, seed: u8, done: tokio::sync::mpsc::Sender<()>) -> u32 {
    let c = echo_client(addr).await;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = vec![];
    for i in 0..calls {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (mut c, done) = (c.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let body = pattern(1500 + i as usize * 11, seed.wrapping_add(i as u8));
            let rsp = c.unary(msg(&body, i, "")).await;
            drop(permit);
            let _ = done.send(()).await;
            match rsp {
                Ok(r) if r.get_ref().body == body => 1u32,
                Ok(_) => panic!("call {i} ({addr}): wrong body"),
                Err(e) => panic!("call {i} ({addr}) failed: {e}"),
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

#[tokio::test]
async fn a_path_killed_while_calls_run_both_ways_loses_and_repeats_none() {
    bounded(90, async {
        const CALLS: u32 = 300;
        for mode in [Mode::Strict, Mode::Permissive] {
            let pair = Pair::start(mode).await;
            let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(2 * CALLS as usize);
            let fwd = tokio::spawn(load(pair.forward(), CALLS, 1, done_tx.clone()));
            let rev = tokio::spawn(load(pair.reverse(), CALLS, 101, done_tx));
            // Kill a path when a third of all calls is done: both directions are in flight.
            for _ in 0..(2 * CALLS / 3) {
                done_rx.recv().await;
            }
            pair.proxies[0].kill();
            assert_eq!((fwd.await.unwrap(), rev.await.unwrap()), (CALLS, CALLS), "{mode:?}");
            assert_eq!(pair.calls(), (CALLS as usize, CALLS as usize), "{mode:?}: a call reached a server twice");

            // Healed, both paths carry both directions again.
            pair.proxies[0].heal();
            pair.wait_live(2).await;
            let before = pair.session().stats().await.unwrap();
            let (tx, _rx) = tokio::sync::mpsc::channel::<()>(100);
            let (f, r) = tokio::join!(load(pair.forward(), 40, 7, tx.clone()), load(pair.reverse(), 40, 9, tx));
            assert_eq!((f, r), (40, 40));
            let after = pair.session().stats().await.unwrap();
            for (b, a) in before.paths.iter().zip(&after.paths) {
                assert!(a.live, "{mode:?}: {a:?}");
                assert!(
                    a.stats.data_bytes_sent > b.stats.data_bytes_sent + 40_000,
                    "{mode:?}: path {} carried nothing after the heal: {b:?} -> {a:?}",
                    a.path
                );
            }
            assert_eq!(pair.calls(), (CALLS as usize + 40, CALLS as usize + 40));
            pair.shutdown().await;
        }
    })
    .await
}

#[tokio::test]
async fn a_new_session_reopens_the_reverse_channel() {
    bounded(60, async {
        let pair = Pair::start(Mode::Strict).await;
        let first = pair.session().id();
        let mut rc = echo_client(pair.reverse()).await;
        rc.unary(msg(b"before", 0, "")).await.unwrap();
        // Every path down past the resume timeout: the session ends, and
        // with it the channel; the client gateway opens a new session.
        pair.proxies[0].kill();
        pair.proxies[1].kill();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        pair.proxies[0].heal();
        pair.proxies[1].heal();
        let rsp = rc.unary(msg(b"after", 0, "")).await.unwrap();
        assert_eq!(rsp.into_inner().body.as_ref(), b"after");
        assert_ne!(pair.session().id(), first, "a new session");
        assert_eq!(pair.end.reverse_channels(), 1, "the old channel is gone, the new one open");
        pair.shutdown().await;
    })
    .await
}

/// An end gateway with a reverse listener and no client gateway.
async fn lone_end() -> (TestServer, Gateway) {
    let facility = start_echo().await;
    let tcp = TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![facility.addr.to_string()] };
    let rev = ReverseConfig { listen: vec!["127.0.0.1:0".into()], address: vec![] };
    let end = gateway("end", Mode::Strict, tcp, rev);
    (facility, end)
}

#[tokio::test]
async fn without_a_channel_reverse_calls_fail_unavailable_after_the_connect_timeout() {
    bounded(30, async {
        let (_facility, end) = lone_end().await;
        let mut rc = echo_client(end.reverse_addrs()[0]).await;
        let start = Instant::now();
        let err = rc.unary(msg(b"nobody", 0, "")).await.unwrap_err();
        let waited = start.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("no reverse channel"), "{err:?}");
        assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4), "{waited:?}");
        // A caller deadline shorter than the connect timeout wins (sent as
        // a bare `grpc-timeout` header, so only the gateway enforces it).
        let start = Instant::now();
        let status = raw_call_status(end.reverse_addrs()[0], "300m").await;
        assert_eq!(status, "4", "DEADLINE_EXCEEDED");
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        end.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn the_reverse_path_is_refused_outside_a_session() {
    bounded(30, async {
        let (_facility, end) = lone_end().await;
        // An ESI client on the ordinary listener (plain h2c, no session).
        let client = resi::client::Client::plain(end.local_addrs()[0].to_string(), Duration::from_secs(2), None);
        let opts = resi::client::CallOptions::default();
        let err = client.unary(resi::proto::REVERSE_PATH, Bytes::new(), &opts).await.unwrap_err();
        assert_eq!(err.status.code, resi::grpc::Code::FailedPrecondition, "{err}");
        assert!(err.status.message.contains("only be opened over a RESI session"), "{err}");
        // Nor on the reverse listener.
        let rclient = resi::client::Client::plain(end.reverse_addrs()[0].to_string(), Duration::from_secs(2), None);
        let err = rclient.unary(resi::proto::REVERSE_PATH, Bytes::new(), &opts).await.unwrap_err();
        assert_eq!(err.status.code, resi::grpc::Code::FailedPrecondition, "{err}");
        assert_eq!(end.reverse_channels(), 0);
        client.close().await;
        rclient.close().await;
        end.shutdown().await;
    })
    .await
}


/// One unary Echo call over a bare hyper HTTP/2 connection with
/// `grpc-timeout: timeout`; returns the `grpc-status` it ended with.
async fn raw_call_status(addr: SocketAddr, timeout: &str) -> String {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let body = resi::grpc::frame_bytes(&prost::Message::encode_to_vec(&msg(b"hurry", 0, "")));
    let req = http::Request::post(format!("http://{addr}/resitest.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(body))
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    if let Some(s) = rsp.headers().get("grpc-status") {
        return s.to_str().unwrap().to_string();
    }
    let trailers = rsp.into_body().collect().await.unwrap().trailers().cloned().unwrap_or_default();
    trailers.get("grpc-status").map(|s| s.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn with_two_channels_the_most_recent_carries_the_calls() {
    bounded(30, async {
        let (_facility, end) = lone_end().await;
        let upstream = vec![end.local_addrs()[0].to_string()];
        let first_server = start_echo().await;
        let second_server = start_echo().await;
        let client_gw = |name: &str, server: &TestServer| {
            let tcp = TcpConfig { listen: vec!["127.0.0.1:0".into()], address: upstream.clone() };
            let rev = ReverseConfig { listen: vec![], address: vec![server.addr.to_string()] };
            gateway(name, Mode::Strict, tcp, rev)
        };
        let first = client_gw("first", &first_server);
        let deadline = Instant::now() + Duration::from_secs(10);
        while end.reverse_channels() < 1 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let second = client_gw("second", &second_server);
        while end.reverse_channels() < 2 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut rc = echo_client(end.reverse_addrs()[0]).await;
        for _ in 0..5 {
            rc.unary(msg(b"x", 0, "")).await.unwrap();
        }
        let count = |s: &TestServer| s.counters.echo_calls.load(Ordering::SeqCst);
        assert_eq!((count(&first_server), count(&second_server)), (0, 5), "the most recent channel");
        // The most recent one gone, calls go over the other.
        second.shutdown().await;
        rc.unary(msg(b"y", 0, "")).await.unwrap();
        assert_eq!((count(&first_server), count(&second_server)), (1, 5));
        first.shutdown().await;
        end.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn stopping_the_client_gateway_first_ends_the_channel_at_once() {
    bounded(30, async {
        let (_facility, end) = lone_end().await;
        let exchange = start_echo().await;
        let tcp = TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![end.local_addrs()[0].to_string()] };
        let rev = ReverseConfig { listen: vec![], address: vec![exchange.addr.to_string()] };
        let client = gateway("client", Mode::Strict, tcp, rev);
        let mut rc = echo_client(end.reverse_addrs()[0]).await;
        rc.unary(msg(b"x", 0, "")).await.unwrap();
        assert_eq!(end.reverse_channels(), 1);
        // Direct paths (no relay): the session's Close reaches the end
        // gateway, which drops the session and its channel.
        client.shutdown().await;
        let start = Instant::now();
        while end.reverse_channels() > 0 || end.sessions().session_count() > 0 {
            assert!(start.elapsed() < Duration::from_secs(1), "the channel outlived its session");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let err = rc.unary(msg(b"y", 0, "")).await.unwrap_err();
        assert!(err.message().contains("no reverse channel"), "{err:?}");
        let start = Instant::now();
        end.shutdown().await;
        assert!(start.elapsed() < Duration::from_millis(500), "end shutdown took {:?}", start.elapsed());
    })
    .await
}
