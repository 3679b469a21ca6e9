//! Security issue 10 through real sockets: mode authority (a permissive
//! client gateway against a strict end gateway), a flood of Opens while a
//! genuine client gateway connects, and paths that corrupt or tamper with
//! bytes under load in each mode, with every response checked.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tonic::Code;

use common::echo::*;
use common::faultproxy::FaultProxy;
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::fault::Direction;
use resi::gateway::{Gateway, UpstreamKind};
use resi::proto::{esi, resi as rp, MODIFY_PATH};
use resi::session::client::{modify_request, open_request, redundancy_answer};
use resi::session::driver::SessionStats;
use resi::session::{Mode, SessionConfig};

async fn bounded<F: std::future::Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f).await.expect("test timed out");
}

fn resi_config(name: &str, mode: Mode) -> ResiConfig {
    ResiConfig {
        name: name.into(),
        mode,
        heartbeat_interval: Duration::from_millis(100),
        dead_timeout: Duration::from_millis(500),
        redial_max_backoff: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(3),
        ..ResiConfig::default()
    }
}

fn gateway(resi: ResiConfig, listen: usize, upstream: Vec<String>) -> Gateway {
    let tcp = Some(TcpConfig { listen: vec!["127.0.0.1:0".into(); listen], address: upstream });
    Gateway::start(Config { source: None, tcp, nkn: None, resi, reverse: None, tls: None, metrics: None }).expect("gateway starts")
}

/// ESI server ← end gateway ⇐ two relayed TCP paths ⇐ client gateway.
struct Pair {
    _server: TestServer,
    end: Gateway,
    client: Gateway,
    relays: Vec<FaultProxy>,
}

impl Pair {
    async fn start(end_mode: Mode, client_mode: Mode) -> Pair {
        let server = start_echo_esi(&[]).await;
        let end = gateway(resi_config("end", end_mode), 2, vec![server.addr.to_string()]);
        let mut relays = vec![];
        for addr in end.local_addrs() {
            relays.push(FaultProxy::start(addr).await);
        }
        let upstream = relays.iter().map(|p| p.addr().to_string()).collect();
        let client = gateway(resi_config("client", client_mode), 1, upstream);
        let pair = Pair { _server: server, end, client, relays };
        pair.wait_live(2).await;
        pair
    }

    fn addr(&self) -> SocketAddr {
        self.client.local_addrs()[0]
    }

    async fn wait_live(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(stats) = self.client_stats().await {
                if stats.paths.iter().filter(|p| p.live).count() >= n {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "fewer than {n} live paths");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn client_stats(&self) -> Option<SessionStats> {
        self.client.upstream_session()?.stats().await
    }

    async fn end_stats(&self) -> Vec<SessionStats> {
        let mut all = vec![];
        for s in self.end.sessions().sessions() {
            all.extend(s.stats().await);
        }
        all
    }
}

/// Outcome of a batch of unary calls whose answers are all checked.
#[derive(Debug, Default)]
struct Outcome {
    ok: u32,
    /// (code, message) of each failed call.
    failed: Vec<(Code, String)>,
}

/// `calls` unary echo calls, 16 at a time, each with its own body; a
/// response whose body differs from the request panics the test.
async fn checked_load(addr: SocketAddr, calls: u32) -> Outcome {
    let c = echo_client(addr).await;
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = vec![];
    for i in 0..calls {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = pattern(1000 + (i as usize * 97) % 9000, i as u8);
            let mut req = tonic::Request::new(Msg { body: body.clone(), count: i, note: String::new() });
            req.set_timeout(Duration::from_secs(10));
            let rsp = c.unary(req).await;
            drop(permit);
            match rsp {
                Ok(r) => {
                    let r = r.into_inner();
                    assert!(r.body == body && r.count == i, "call {i}: a wrong response was delivered");
                    Ok(())
                }
                Err(st) => Err((st.code(), st.message().to_string())),
            }
        }));
    }
    let mut out = Outcome::default();
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => out.ok += 1,
            Err(e) => out.failed.push(e),
        }
    }
    out
}

/// Opens a session at `gw` through gRPC Modify asking for `mode`.
async fn open_session(gw: SocketAddr, mode: Mode) -> rp::OpenResponse {
    let cfg = SessionConfig { mode, ..SessionConfig::default() };
    let req = modify_request(rp::redundancy::Msg::Open(open_request(&cfg, 1)));
    let req = ModifyRequest { ext: req.ext.map(|e| Extension { id: e.id, pass: e.pass, data: e.data }) };
    let rsp = esi_client(gw).await.modify(req).await.unwrap().into_inner();
    let rsp = esi::ModifyResponse { ext: rsp.ext.map(|e| esi::Extension { id: e.id, pass: e.pass, data: e.data }) };
    match redundancy_answer(&rsp).unwrap() {
        rp::redundancy::Msg::Opened(o) => o,
        other => panic!("not opened: {other:?}"),
    }
}

#[tokio::test]
async fn a_strict_end_gateway_runs_a_permissive_request_strict_and_never_delivers_an_altered_copy() {
    bounded(90, async {
        let pair = Pair::start(Mode::Strict, Mode::Permissive).await;
        // The acceptor answers the mode in force, never MODE_UNSPECIFIED.
        let opened = open_session(pair.end.local_addrs()[0], Mode::Permissive).await;
        assert_eq!(opened.mode, rp::Mode::Strict as i32);
        assert_eq!(pair.client_stats().await.unwrap().mode, Mode::Strict, "the client gateway runs what was answered");
        assert!(pair.end_stats().await.iter().all(|s| s.mode == Mode::Strict));
        let clean = checked_load(pair.addr(), 50).await;
        assert_eq!(clean.ok, 50, "{:?}", clean.failed);

        // One path alters DATA and recomputes the CRC: only comparison can
        // catch it, and strict with two live paths fails closed instead of
        // delivering: calls are OK and untouched until one ends DATA_LOSS
        // saying why. Calls go one at a time, so every call up to that one
        // ran on the session both paths carried. (Its successor may run on
        // the altering path alone before the other merges: strict mode with
        // one live path cannot compare, protocol section 10.3.)
        pair.relays[1].tamper(0.2);
        let mut c = echo_client(pair.addr()).await;
        let mut failure = None;
        for i in 0..200u32 {
            let body = pattern(1000 + (i as usize * 97) % 9000, i as u8);
            let mut req = tonic::Request::new(Msg { body: body.clone(), count: i, note: String::new() });
            req.set_timeout(Duration::from_secs(10));
            match c.unary(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    assert!(r.body == body && r.count == i, "call {i}: an altered copy was delivered");
                }
                Err(st) => {
                    failure = Some(st);
                    break;
                }
            }
        }
        let failure = failure.expect("200 calls through a tampering path and no failure");
        assert_eq!(failure.code(), Code::DataLoss, "{failure:?}");
        assert!(failure.message().contains("copies disagreed"), "{}", failure.message());
        // Healed, the client gateway's next session carries calls again.
        pair.relays[1].heal();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let after = checked_load(pair.addr(), 20).await;
            if after.ok == 20 {
                break;
            }
            assert!(Instant::now() < deadline, "no recovery after heal: {after:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// A flood of Opens from a raw HTTP/2 client bound to `source`, 32 at a
/// time: it goes on until `stop` is set and at least `min` were sent.
struct Flood {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<(usize, usize)>,
}

impl Flood {
    fn start(gw: SocketAddr, source: &'static str, min: usize) -> Flood {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn(flood_opens(gw, source, min, stop.clone(), sent.clone()));
        Flood { stop, sent, task }
    }

    /// Waits until `n` Opens were sent.
    async fn wait_sent(&self, n: usize) {
        while self.sent.load(std::sync::atomic::Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops it; (answered `opened`, answered `RESOURCE_EXHAUSTED`).
    async fn finish(self) -> (usize, usize) {
        assert!(!self.task.is_finished(), "the flood ended before the genuine client was done");
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

async fn flood_opens(
    gw: SocketAddr,
    source: &str,
    min: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicUsize>,
) -> (usize, usize) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(gw).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let body = resi::grpc::encode_frame(&modify_request(rp::redundancy::Msg::Open(open_request(&SessionConfig::default(), 2))));
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = vec![];
    let mut n = 0;
    while n < min || !stop.load(std::sync::atomic::Ordering::SeqCst) {
        n += 1;
        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let permit = sem.clone().acquire_owned().await.unwrap();
        let mut tx = tx.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::post(format!("http://{gw}{MODIFY_PATH}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(body))
                .unwrap();
            tx.ready().await.unwrap();
            let rsp = tx.send_request(req).await.unwrap();
            drop(permit);
            let (parts, body) = rsp.into_parts();
            let collected = body.collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let status = resi::grpc::Status::from_headers(&parts.headers).or_else(|| resi::grpc::Status::from_headers(&trailers));
            match status.map(|s| s.code) {
                Some(resi::grpc::Code::Ok) => {
                    let msg = resi::grpc::decode_unary_frame(collected.to_bytes()).unwrap();
                    let rsp = esi::ModifyResponse::decode(msg).unwrap();
                    assert!(matches!(redundancy_answer(&rsp).unwrap(), rp::redundancy::Msg::Opened(_)));
                    (1, 0)
                }
                Some(resi::grpc::Code::ResourceExhausted) => (0, 1),
                other => panic!("unexpected answer to a flooded Open: {other:?}"),
            }
        }));
    }
    let mut totals = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        totals = (totals.0 + a, totals.1 + b);
    }
    totals
}

/// Starts a client gateway to `end` and checks it connects and carries calls.
async fn genuine_client_gets_in(end: &Gateway) -> Gateway {
    let upstream = end.local_addrs().iter().map(|a| a.to_string()).collect();
    let client = gateway(resi_config("genuine", Mode::Strict), 1, upstream);
    let out = checked_load(client.local_addrs()[0], 20).await;
    assert_eq!(out.ok, 20, "a genuine client gateway was kept out: {:?}", out.failed);
    assert!(matches!(client.upstream_kind(), Some(UpstreamKind::Resi { paths: 2, .. })));
    client
}

#[tokio::test]
async fn a_flood_of_opens_does_not_keep_a_genuine_client_gateway_out() {
    bounded(90, async {
        let server = start_echo_esi(&[]).await;
        // From another address, with the default limits: mostly refused by
        // the rate limit, never more than 16 pending at once.
        let mut resi = resi_config("end", Mode::Strict);
        resi.open_timeout = Duration::from_secs(1);
        let end = gateway(resi, 2, vec![server.addr.to_string()]);
        let started = Instant::now();
        let flood = Flood::start(end.local_addrs()[0], "127.0.0.2", 2000);
        flood.wait_sent(200).await;
        let during = genuine_client_gets_in(&end).await;
        assert!(end.sessions().pending_count() <= 16, "pending: {}", end.sessions().pending_count());
        let (opened, refused) = flood.finish().await;
        assert!(opened + refused >= 2000);
        // Burst 20, then 20 per second.
        let allowed = 20 + (20.0 * started.elapsed().as_secs_f64()).ceil() as usize;
        assert!(opened <= allowed, "the per-peer rate did not hold: {opened} opened (allowed {allowed}), {refused} refused");
        let after = genuine_client_gets_in(&end).await;
        // Pending flood sessions are gone after the open timeout; the two
        // genuine sessions stay.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(end.sessions().pending_count(), 0);
        assert_eq!(end.sessions().session_count(), 2);
        drop((during, after));

        // From the genuine dialler's own address with no rate limit: the
        // oldest pending sessions give way, and the genuine one has merged.
        let mut resi = resi_config("end2", Mode::Strict);
        resi.open_rate_per_peer = 0;
        let end = gateway(resi, 2, vec![server.addr.to_string()]);
        let flood = Flood::start(end.local_addrs()[0], "127.0.0.1", 2000);
        flood.wait_sent(200).await;
        let during = genuine_client_gets_in(&end).await;
        let (opened, refused) = flood.finish().await;
        assert!(opened >= 2000 && refused == 0, "{opened} opened, {refused} refused");
        assert!(end.sessions().pending_count() <= 16);
        let after = genuine_client_gets_in(&end).await;
        let c = echo_client(during.local_addrs()[0]).await;
        let mut c2 = c.clone();
        let rsp = c2.unary(Msg { body: Bytes::from_static(b"still in"), count: 0, note: String::new() }).await.unwrap();
        assert_eq!(rsp.into_inner().body.as_ref(), b"still in");
        drop(after);
    })
    .await
}

#[tokio::test]
async fn a_path_that_corrupts_bytes_is_caught_blamed_and_never_delivered_in_each_mode() {
    bounded(120, async {
        for mode in [Mode::Permissive, Mode::Strict] {
            let pair = Pair::start(mode, mode).await;
            pair.relays[1].corrupt(0.00005, Direction::Both);
            let out = checked_load(pair.addr(), 400).await;
            // The clean path carries everything: nothing fails.
            assert_eq!(out.ok, 400, "{mode:?}: {:?}", out.failed);
            let mut all = vec![pair.client_stats().await.expect("session")];
            all.extend(pair.end_stats().await);
            let counted = |p: u32| -> u64 {
                all.iter().flat_map(|s| &s.paths).filter(|r| r.path == p).map(|r| r.stats.corrupt_frames).sum()
            };
            assert!(counted(1) > 0, "{mode:?}: no corrupt frame counted on the corrupting path: {all:?}");
            assert_eq!(counted(0), 0, "{mode:?}: the clean path was blamed");
            let mismatches: u64 = all.iter().flat_map(|s| &s.paths).map(|r| r.stats.mismatches).sum();
            assert_eq!(mismatches, 0, "{mode:?}: a corrupted copy reached the comparison");
            let readmitted = all[0].paths.iter().find(|r| r.path == 1).map_or(0, |r| r.stats.admissions);
            assert!(readmitted > 1, "{mode:?}: the corrupting TCP path was not closed and redialled");
            pair.relays[1].heal();
            pair.client.shutdown().await;
            pair.end.shutdown().await;
        }
    })
    .await
}
