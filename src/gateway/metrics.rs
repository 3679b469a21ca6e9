//! The Prometheus endpoint (`[Metrics] Listen`): `GET /metrics` over
//! HTTP/1.1, off unless configured.
//!
//! Nothing is counted twice: the session counters already live in each
//! session (read through [`SessionHandle::stats`]), so a scrape takes a
//! snapshot of every session and writes it out; only the calls forwarded
//! by status are counted here ([`CallCounts`]), because no other part of
//! the gateway keeps them. The text is encoded by the `prometheus` crate
//! (the Prometheus text exposition format, 0.0.4). Names and labels are
//! listed in `docs/protocol.md`, "Operations: metrics".

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
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

/// `content-type` of a scrape answer: the Prometheus text format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
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

/// The metrics of one scrape, registered as they are made.
struct Families {
    registry: Registry,
}

impl Families {
    fn new() -> Families {
        Families { registry: Registry::new_custom(Some("resi".into()), None).expect("a valid prefix") }
    }

    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, m: M) -> M {
        self.registry.register(Box::new(m.clone())).expect("each name registered once");
        m
    }

    /// A counter family; `name` ends in `_total`.
    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    fn gauge_f64(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.add(GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric"))
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

    let f = Families::new();
    f.gauge("gateway_info", "This gateway: its [Resi] Name and the resi version", &["name", "version"])
        .with_label_values(&[src.name.as_str(), env!("CARGO_PKG_VERSION")])
        .set(1);
    gateway_metrics(&f, src, up, &sessions);
    session_metrics(&f, &sessions);
    let mut out = String::new();
    TextEncoder::new().encode_utf8(&f.registry.gather(), &mut out).expect("writing to a String cannot fail");
    out
}

fn gateway_metrics(f: &Families, src: &Sources, up: bool, sessions: &[Snapshot]) {
    let one = |name: &str, help: &str, v: i64| f.gauge(name, help, &[]).with_label_values::<&str>(&[]).set(v);
    one("upstream_up", "1 while calls can reach the upstream (what the health service reports as SERVING)", i64::from(up));
    let open = f.gauge("sessions_open", "Redundant sessions open, by role (accepted from client gateways, dialled upstream)", &["role"]);
    for role in ["accepted", "dialled"] {
        open.with_label_values(&[role]).set(sessions.iter().filter(|s| s.role == role).count() as i64);
    }
    one("sessions_pending", "Sessions opened by a client gateway that no path has joined yet", src.registry.pending_count() as i64);
    let c = &src.connections;
    let busy = c.limit.saturating_sub(c.permits.available_permits());
    one("connections_open", "TCP connections the listeners serve now (ESI clients and RESI paths being set up)", busy as i64);
    one("connections_limit", "[Resi] MaxConnections in force", c.limit as i64);
    let channels = src.reverse.as_ref().map_or(0, |r| r.count());
    one("reverse_channels_open", "Reverse channels client gateways keep open to this gateway", channels as i64);
    f.counter("sessions_superseded_total", "Accepted sessions ended at once because their client gateway restarted", &[])
        .with_label_values::<&str>(&[])
        .inc_by(src.registry.superseded_count());
    f.counter("nkn_refused_hellos_total", "NKN HELLOs dropped: their sender is not in [Nkn] AllowedPeers", &[])
        .with_label_values::<&str>(&[])
        .inc_by(src.nkn.as_ref().map_or(0, |n| n.refused_hellos()));
    let calls = f.counter(
        "calls_forwarded_total",
        "Calls forwarded to the upstream or a reverse channel, by final gRPC status",
        &["code"],
    );
    for (i, name) in CODE_NAMES.iter().enumerate() {
        calls.with_label_values(&[*name]).inc_by(src.calls.get(i));
    }
}

type PathCounter = (IntCounterVec, fn(&crate::session::machine::PathStats) -> u64);

fn path_counters(f: &Families) -> Vec<PathCounter> {
    let l = &["session", "role", "path"];
    vec![
        (f.counter("path_sent_bytes_total", "Bytes the path sent (frames, headers included)", l), |s| s.bytes_sent),
        (f.counter("path_received_bytes_total", "Bytes the path received (frames, headers included)", l), |s| s.bytes_received),
        (f.counter("path_sent_frames_total", "Frames the path sent", l), |s| s.frames_sent),
        (f.counter("path_received_frames_total", "Frames the path received", l), |s| s.frames_received),
        (f.counter("path_data_sent_bytes_total", "Stream bytes the path sent in DATA frames", l), |s| s.data_bytes_sent),
        (f.counter("path_retransmitted_bytes_total", "Stream bytes the path sent again", l), |s| s.retransmitted_bytes),
        (f.counter("path_first_bytes_total", "PRP: stream bytes this path brought first", l), |s| s.first_bytes),
        (f.counter("path_duplicate_bytes_total", "PRP: stream bytes this path brought after another path", l), |s| {
            s.duplicate_bytes
        }),
        (f.counter("path_missed_bytes_total", "PRP: stream bytes this path never brought", l), |s| s.missed_bytes),
        (f.counter("path_mismatches_total", "Copies on this path that differed from the delivered bytes", l), |s| s.mismatches),
        (f.counter("path_corrupt_frames_total", "Frames that failed their CRC-32C (discarded)", l), |s| s.corrupt_frames),
        (f.counter("path_latent_errors_total", "Times the path was up but not carrying data", l), |s| s.latent_errors),
        (f.counter("path_admissions_total", "Times the path was admitted to the live set", l), |s| s.admissions),
    ]
}

fn session_metrics(f: &Families, sessions: &[Snapshot]) {
    let sl = &["session", "role"];
    let delivered = f.counter("session_delivered_bytes_total", "Stream bytes a session delivered, once each", sl);
    let buffered = f.gauge("session_buffered_bytes", "Bytes a session holds: sent but not acknowledged, or waiting for copies", sl);
    let strict = f.gauge("session_strict", "1 if the session runs strict, 0 if permissive", sl);
    let pl = &["session", "role", "path"];
    let path_up = f.gauge("path_up", "1 while the path is live (in the session's live set), 0 while down", pl);
    let rtt = f.gauge_f64("path_rtt_seconds", "Smoothed round-trip time of the path (absent before its first PONG)", pl);
    let counters = path_counters(f);
    for snap in sessions {
        let s = &snap.stats;
        let session = [s.session_id.as_str(), snap.role];
        delivered.with_label_values(&session).inc_by(s.delivered);
        buffered.with_label_values(&session).set(s.buffered as i64);
        strict.with_label_values(&session).set(i64::from(s.mode == crate::session::Mode::Strict));
        for p in &s.paths {
            let id = p.path.to_string();
            let labels = [session[0], session[1], id.as_str()];
            path_up.with_label_values(&labels).set(i64::from(p.live));
            if let Some(r) = p.stats.rtt {
                rtt.with_label_values(&labels).set(r.as_secs_f64());
            }
            for (family, read) in &counters {
                family.with_label_values(&labels).inc_by(read(&p.stats));
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
