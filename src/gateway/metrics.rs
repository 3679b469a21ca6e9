//! The Prometheus endpoint (`[Metrics] Listen`): `GET /metrics` over
//! HTTP/1.1, off unless configured.
//!
//! Nothing is counted twice: the session counters already live in each
//! session (read through [`SessionHandle::stats`]), so a scrape takes a
//! snapshot of every session and writes it out; only the calls forwarded
//! by status are counted here ([`CallCounts`]), because no other part of
//! the gateway keeps them. The text is encoded by the `prometheus-client`
//! crate (OpenMetrics text, which Prometheus scrapes natively). Names and
//! labels are listed in `docs/protocol.md`, "Metrics".

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::reverse::Channels;
use super::upstream::Upstream;
use crate::grpc::Code;
use crate::path::nkn::NknEndpoint;
use crate::session::driver::SessionStats;
use crate::session::registry::SessionRegistry;
use crate::session::SessionHandle;

/// `content-type` of a scrape answer.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scrape that takes longer than this is cut (a stuck client).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that does not answer its stats within this is left out.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);
/// Scrape connections served at once; more wait in the accept queue.
const MAX_SCRAPERS: usize = 16;

/// Calls this gateway forwarded, by the gRPC status they ended with.
#[derive(Debug, Default)]
pub(crate) struct CallCounts {
    by_code: [AtomicU64; 17],
}

impl CallCounts {
    pub(crate) fn record(&self, code: Code) {
        self.by_code[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, code: usize) -> u64 {
        self.by_code[code].load(Ordering::Relaxed)
    }
}

/// gRPC code names as the gRPC spec writes them (`code` label values).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Connections the main listeners serve now, out of `limit`.
pub(crate) struct Connections {
    pub permits: Arc<Semaphore>,
    pub limit: usize,
}

/// Everything a scrape reads.
pub(crate) struct Sources {
    pub name: String,
    pub upstream: Arc<Upstream>,
    pub registry: Arc<SessionRegistry>,
    pub calls: Arc<CallCounts>,
    pub connections: Connections,
    pub reverse: Option<Arc<Channels>>,
    pub nkn: Option<Arc<NknEndpoint>>,
}

type Labels = Vec<(&'static str, String)>;

/// One registered family per metric; filled from a snapshot, then encoded.
struct Families {
    registry: Registry,
}

impl Families {
    fn new() -> Families {
        Families { registry: Registry::with_prefix("resi") }
    }

    fn counter(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn gauge(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    fn gauge_f64(&mut self, name: &str, help: &str) -> Family<Labels, Gauge<f64, AtomicU64>> {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        self.registry.register(name, help, f.clone());
        f
    }
}

/// A session's snapshot with where it came from.
struct Snapshot {
    role: &'static str,
    stats: SessionStats,
}

async fn snapshot(handle: SessionHandle, role: &'static str) -> Option<Snapshot> {
    let stats = tokio::time::timeout(STATS_TIMEOUT, handle.stats()).await.ok().flatten()?;
    Some(Snapshot { role, stats })
}

/// The whole exposition, as a scrape answers it.
pub(crate) async fn render(src: &Sources) -> String {
    let mut sessions = Vec::new();
    for h in src.registry.sessions() {
        sessions.extend(snapshot(h, "accepted").await);
    }
    if let Some(h) = src.upstream.session() {
        sessions.extend(snapshot(h, "dialled").await);
    }
    let up = src.upstream.usable().await;

    let mut f = Families::new();
    let info = Info::new(vec![("name", src.name.clone()), ("version", env!("CARGO_PKG_VERSION").to_string())]);
    f.registry.register("gateway", "This gateway: its [Resi] Name and the resi version", info);
    gateway_metrics(&mut f, src, up, &sessions);
    session_metrics(&mut f, &sessions);
    let mut out = String::new();
    encode(&mut out, &f.registry).expect("writing to a String cannot fail");
    out
}

fn gateway_metrics(f: &mut Families, src: &Sources, up: bool, sessions: &[Snapshot]) {
    f.gauge("upstream_up", "1 while calls can reach the upstream (what the health service reports as SERVING)")
        .get_or_create(&vec![])
        .set(i64::from(up));
    let open = f.gauge("sessions_open", "Redundant sessions open, by role (accepted from client gateways, dialled upstream)");
    for role in ["accepted", "dialled"] {
        let n = sessions.iter().filter(|s| s.role == role).count();
        open.get_or_create(&vec![("role", role.to_string())]).set(n as i64);
    }
    f.gauge("sessions_pending", "Sessions opened by a client gateway that no path has joined yet")
        .get_or_create(&vec![])
        .set(src.registry.pending_count() as i64);
    let c = &src.connections;
    f.gauge("connections_open", "TCP connections the listeners serve now (ESI clients and RESI paths being set up)")
        .get_or_create(&vec![])
        .set(c.limit.saturating_sub(c.permits.available_permits()) as i64);
    f.gauge("connections_limit", "[Resi] MaxConnections in force")
        .get_or_create(&vec![])
        .set(c.limit as i64);
    f.gauge("reverse_channels_open", "Reverse channels client gateways keep open to this gateway")
        .get_or_create(&vec![])
        .set(src.reverse.as_ref().map_or(0, |r| r.count()) as i64);
    f.counter("nkn_refused_hellos", "NKN HELLOs dropped: their sender is not in [Nkn] AllowedPeers")
        .get_or_create(&vec![])
        .inc_by(src.nkn.as_ref().map_or(0, |n| n.refused_hellos()));
    let calls = f.counter("calls_forwarded", "Calls forwarded to the upstream or a reverse channel, by final gRPC status");
    for (i, name) in CODE_NAMES.iter().enumerate() {
        calls.get_or_create(&vec![("code", name.to_string())]).inc_by(src.calls.get(i));
    }
}

fn session_metrics(f: &mut Families, sessions: &[Snapshot]) {
    let delivered = f.counter("session_delivered_bytes", "Stream bytes a session delivered, once each");
    let buffered = f.gauge("session_buffered_bytes", "Bytes a session holds: sent but not acknowledged, or waiting for copies");
    let mode = f.gauge("session_strict", "1 if the session runs strict, 0 if permissive");
    let path_up = f.gauge("path_up", "1 while the path is live (in the session's live set), 0 while down");
    let rtt = f.gauge_f64("path_rtt_seconds", "Smoothed round-trip time of the path (absent before its first PONG)");
    let counters: Vec<(Family<Labels, Counter>, fn(&crate::session::machine::PathStats) -> u64)> = vec![
        (f.counter("path_sent_bytes", "Bytes the path sent (frames, headers included)"), |s| s.bytes_sent),
        (f.counter("path_received_bytes", "Bytes the path received (frames, headers included)"), |s| s.bytes_received),
        (f.counter("path_sent_frames", "Frames the path sent"), |s| s.frames_sent),
        (f.counter("path_received_frames", "Frames the path received"), |s| s.frames_received),
        (f.counter("path_data_sent_bytes", "Stream bytes the path sent in DATA frames"), |s| s.data_bytes_sent),
        (f.counter("path_retransmitted_bytes", "Stream bytes the path sent again"), |s| s.retransmitted_bytes),
        (f.counter("path_first_bytes", "PRP: stream bytes this path brought first"), |s| s.first_bytes),
        (f.counter("path_duplicate_bytes", "PRP: stream bytes this path brought after another path"), |s| s.duplicate_bytes),
        (f.counter("path_missed_bytes", "PRP: stream bytes this path never brought"), |s| s.missed_bytes),
        (f.counter("path_mismatches", "Copies on this path that differed from the delivered bytes"), |s| s.mismatches),
        (f.counter("path_corrupt_frames", "Frames that failed their CRC-32C (discarded)"), |s| s.corrupt_frames),
        (f.counter("path_latent_errors", "Times the path was up but not carrying data"), |s| s.latent_errors),
        (f.counter("path_admissions", "Times the path was admitted to the live set"), |s| s.admissions),
    ];
    for snap in sessions {
        let s = &snap.stats;
        let session = vec![("session", s.session_id.clone()), ("role", snap.role.to_string())];
        delivered.get_or_create(&session).inc_by(s.delivered);
        buffered.get_or_create(&session).set(s.buffered as i64);
        mode.get_or_create(&session).set(i64::from(s.mode == crate::session::Mode::Strict));
        for p in &s.paths {
            let mut labels = session.clone();
            labels.push(("path", p.path.to_string()));
            path_up.get_or_create(&labels).set(i64::from(p.live));
            if let Some(r) = p.stats.rtt {
                rtt.get_or_create(&labels).set(r.as_secs_f64());
            }
            for (family, read) in &counters {
                family.get_or_create(&labels).inc_by(read(&p.stats));
            }
        }
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub(crate) async fn serve(listener: TcpListener, src: Arc<Sources>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("never closed"),
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        match accepted {
            Ok((tcp, peer)) => {
                conns.spawn(scrape_connection(tcp, peer, src.clone(), permit));
            }
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    conns.shutdown().await;
}

async fn scrape_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    src: Arc<Sources>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |req| answer(req, src.clone()));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
    match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, "metrics connection failed: {e}"),
        Err(_) => tracing::debug!(%peer, "metrics connection cut after {REQUEST_TIMEOUT:?}"),
    }
}

async fn answer(req: Request<Incoming>, src: Arc<Sources>) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut rsp = Response::new(Full::new(bytes::Bytes::from_static(text.as_bytes())));
        *rsp.status_mut() = status;
        rsp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        rsp
    };
    if req.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n"));
    }
    let mut rsp = Response::new(Full::new(bytes::Bytes::from(render(&src).await)));
    rsp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
    Ok(rsp)
}
