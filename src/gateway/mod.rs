//! The gateway: a gRPC proxy for ESI that answers `Modify` for the
//! extensions it knows and carries everything else to its upstream.
//!
//! - [`listener`]: binding, sniffing HTTP/2 vs RESI paths, connection
//!   lifetimes and graceful shutdown.
//! - [`proxy`]: the per-call service (`Modify` dispatch, streaming
//!   forwarding).
//! - [`upstream`]: discovers whether the upstream is a plain ESI server or a
//!   resi gateway and keeps a connection (or session) to it.
//! - [`reverse`]: the reverse channel, which carries calls from the end
//!   gateway's side back to the client gateway's side over the same session.
//! - [`body`]: request and response body types (with `MaxMessageSize`).
//! - [`guard`]: handshake deadline, idle connections, connection limit.
//! - [`h2client`]: the HTTP/2 client of every upstream connection, on `h2`
//!   directly (no task or channel per call).
//! - [`coalesce`]: an upstream connection's request goes out in one write.
//! - [`health`]: `grpc.health.v1.Health`, answered by the gateway itself.
//! - [`metrics`]: `GET /metrics` in the Prometheus text format
//!   (`[Metrics] Listen`).
//!
//! A gateway runs on the tokio runtime it was started on. Every hop is
//! generic, so gateways chain (client gateway → end gateway → ESI server,
//! or longer).

pub(crate) mod body;
mod coalesce;
mod guard;
mod h2client;
mod h2server;
mod h2stream;
pub mod health;
mod listener;
mod metrics;
mod proxy;
pub(crate) mod reverse;
pub(crate) mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, NknConfig};
use crate::nkn::{ClientConfig, Identity, MultiClientConfig};
use crate::path::nkn::NknEndpoint;
use crate::extension::ExtensionRegistry;
use crate::grpc::Status;
use crate::session::registry::SessionRegistry;
use crate::session::{DiallerId, SessionConfig, SessionHandle};

pub use upstream::UpstreamKind;

/// HTTP/2 flow-control windows: large enough that a 16 MiB message is not
/// throttled by window updates on loopback or a LAN.
pub(crate) const FLOW_STREAM_WINDOW: u32 = 4 << 20;
pub(crate) const FLOW_CONN_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame this hop accepts (fewer frames for big messages).
pub(crate) const MAX_FRAME_SIZE: u32 = 1 << 20;
/// Calls open at once on one HTTP/2 connection.
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest request header block (all metadata of a call).
pub(crate) const MAX_HEADER_LIST: u32 = 64 << 10;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr} ([Metrics] Listen): {source}")]
    MetricsBind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to listen on: the configuration has no [Tcp] Listen address and no [Nkn] Seed")]
    NoListenAddress,
    #[error("a gateway must be started inside a tokio runtime")]
    NoRuntime,
}

/// Where forwarded calls go.
pub(crate) enum Target {
    /// The upstream (`[Tcp] Address`, `[Nkn] Address`), or a local ESI server.
    Upstream(Arc<upstream::Upstream>),
    /// Back over a reverse channel (calls of a `[Reverse] Listen` socket).
    Reverse(Arc<reverse::Channels>),
}

impl Target {
    /// Not an `async fn`: one would hold `req` beside the future it moved
    /// into, on every forwarded call (docs/performance.md).
    fn send(
        &self,
        req: http::Request<body::ReqBody>,
    ) -> impl Future<Output = Result<(http::Response<h2client::ResponseBody>, upstream::CallSession), Status>> + Send + '_
    {
        match self {
            Target::Upstream(u) => future::Either::Left(u.send(req)),
            Target::Reverse(c) => future::Either::Right(c.send(req)),
        }
    }
}

/// State every call of one listener (or inner connection) shares.
pub(crate) struct Shared {
    pub extensions: Arc<ExtensionRegistry>,
    pub target: Target,
    /// Reverse channels this gateway accepts over its sessions (None: it
    /// has no `[Reverse] Listen` and refuses them).
    pub reverse: Option<Arc<reverse::Channels>>,
    pub max_message_size: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTP/2 for connections from ESI clients over TCP (pinged).
    pub h2_server: h2server::Server,
    /// HTTP/2 for connections carried by a session (not pinged: the paths'
    /// heartbeats watch the peer, and a failed session ends the connection).
    pub h2_session: h2server::Server,
    /// Cancelled when the gateway starts shutting down: ends the gateway's
    /// own long-lived answers (health `Watch`).
    pub closing: CancellationToken,
    /// Forwarded calls by final status (for `/metrics`).
    pub calls: Arc<metrics::CallCounts>,
}

impl Shared {
    pub(crate) fn new(
        target: Target,
        reverse: Option<Arc<reverse::Channels>>,
        extensions: Arc<ExtensionRegistry>,
        max_message_size: usize,
    ) -> Shared {
        let defaults = crate::config::ResiConfig::default();
        Shared {
            extensions,
            target,
            reverse,
            max_message_size,
            handshake_timeout: defaults.handshake_timeout,
            idle_timeout: defaults.idle_timeout,
            h2_server: h2server::Server::new(true),
            h2_session: h2server::Server::new(false),
            closing: CancellationToken::new(),
            calls: Arc::default(),
        }
    }

    /// The listener's deadlines of `[Resi]` (`HandshakeTimeout`, `IdleTimeout`).
    pub(crate) fn with_timeouts(mut self, resi: &crate::config::ResiConfig) -> Shared {
        self.handshake_timeout = resi.handshake_timeout;
        self.idle_timeout = resi.idle_timeout;
        self
    }

    /// The gateway's shutdown signal (ends its own long-lived answers) and
    /// its count of forwarded calls.
    pub(crate) fn with_gateway(mut self, closing: CancellationToken, calls: Arc<metrics::CallCounts>) -> Shared {
        self.closing = closing;
        self.calls = calls;
        self
    }
}

/// A running gateway. Stop it with [`Gateway::shutdown`]; dropping it stops
/// it too, without waiting.
pub struct Gateway {
    name: String,
    local_addrs: Vec<SocketAddr>,
    reverse_addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    upstream: Arc<upstream::Upstream>,
    registry: Arc<SessionRegistry>,
    nkn: Option<Arc<NknEndpoint>>,
    metrics_addr: Option<SocketAddr>,
    stop_server: CancellationToken,
    stop_upstream: CancellationToken,
    tasks: Option<(JoinHandle<()>, JoinHandle<()>)>,
}

impl Gateway {
    /// Binds every `[Tcp] Listen` address and starts serving on the current
    /// tokio runtime. Returns at once; the upstream is found in the
    /// background.
    pub fn start(config: Config) -> Result<Gateway, GatewayError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| GatewayError::NoRuntime)?;
        let _guard = rt.enter();
        let tcp = config.tcp.clone().unwrap_or_default();
        let has_nkn_identity = config.nkn.as_ref().is_some_and(|n| n.seed.is_some());
        if tcp.listen.is_empty() && !has_nkn_identity {
            return Err(GatewayError::NoListenAddress);
        }
        let listeners = tcp.listen.iter().map(|a| listener::bind(a)).collect::<Result<Vec<_>, _>>()?;
        let local_addrs: Vec<std::net::SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let rev = config.reverse.clone().unwrap_or_default();
        let reverse_listeners = rev.listen.iter().map(|a| listener::bind(a)).collect::<Result<Vec<_>, _>>()?;
        let reverse_addrs = reverse_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let metrics_listener = config.metrics.as_ref().map(|m| bind_metrics(&m.listen)).transpose()?;
        let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let stop_server = CancellationToken::new();
        let stop_upstream = CancellationToken::new();

        let resi = &config.resi;
        let name = bound_name(&resi.name, &tcp.listen, &local_addrs);
        // A new instance at each start: the end gateway frees the sessions
        // an earlier run of this name left behind (protocol §3.1).
        let session_cfg = SessionConfig { dialler: DiallerId::new(name.clone()), ..resi.session_config() };
        let (registry, sessions) = SessionRegistry::with_limits(session_cfg.clone(), resi.open_limits());
        let extensions = Arc::new(ExtensionRegistry::with_builtins(registry.clone(), name.clone()));
        let upstream_tls = config.tls.as_ref().and_then(|t| t.upstream.clone());
        let upstream = upstream::Upstream::new(tcp.address, resi.connect_timeout, upstream_tls);
        let nkn = config.nkn.as_ref().and_then(|n| start_nkn(n, &registry, resi.connect_timeout));
        if let (Some(endpoint), Some(peer)) = (&nkn, config.nkn.as_ref().and_then(|n| n.address.clone())) {
            upstream.set_nkn_peer(endpoint.clone(), peer);
        }
        if !rev.address.is_empty() {
            upstream.set_reverse(reverse::Opener::start(rev.address, resi.connect_timeout, resi.max_message_size));
        }
        let channels = (!rev.listen.is_empty()).then(|| reverse::Channels::new(resi.connect_timeout));
        // Calls of the reverse listeners know no extensions: a `Modify` with
        // `pass = true` goes to the ESI server behind the other gateway.
        let calls = Arc::new(metrics::CallCounts::default()); // both directions
        let reverse_shared = channels.clone().map(|c| {
            let none = Arc::new(ExtensionRegistry::new());
            let shared = Shared::new(Target::Reverse(c), None, none, resi.max_message_size);
            Arc::new(shared.with_timeouts(resi).with_gateway(stop_server.clone(), calls.clone()))
        });
        let shared = Shared::new(Target::Upstream(upstream.clone()), channels.clone(), extensions, resi.max_message_size);
        let shared = Arc::new(shared.with_timeouts(resi).with_gateway(stop_server.clone(), calls.clone()));
        let limit = guard::connection_limit(resi.max_connections);
        let connections = metrics::Connections { permits: Arc::new(tokio::sync::Semaphore::new(limit)), limit };
        let supervisor = listener::Supervisor {
            listeners,
            sessions,
            registry: registry.clone(),
            shared: shared.clone(),
            stop: stop_server.clone(),
            grace: resi.shutdown_grace,
            reverse_listeners,
            reverse_shared,
            tls: config.tls.as_ref().and_then(|t| t.listener.clone()).map(tokio_rustls::TlsAcceptor::from),
            permits: connections.permits.clone(),
        };
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
        if let Some(listener) = metrics_listener {
            let sources = metrics::Sources {
                name: name.clone(),
                upstream: upstream.clone(),
                registry: registry.clone(),
                calls,
                connections,
                reverse: channels,
                nkn: nkn.clone(),
            };
            tokio::spawn(metrics::serve(listener, Arc::new(sources), stop_server.clone()));
        }
        let server = tokio::spawn(supervisor.run());
        let manager =
            tokio::spawn(upstream::Upstream::supervise(upstream.clone(), session_cfg, stop_upstream.clone()));
        let tls = config.tls.as_ref().is_some_and(|t| t.listener.is_some());
        tracing::info!(%name, addrs = ?local_addrs, reverse = ?reverse_addrs, tls, "gateway started");
        Ok(Gateway {
            name,
            local_addrs,
            reverse_addrs,
            shared,
            upstream,
            registry,
            nkn,
            metrics_addr,
            stop_server,
            stop_upstream,
            tasks: Some((server, manager)),
        })
    }

    /// Where `/metrics` is served (`[Metrics] Listen`, the real port when
    /// the configuration said 0); None without `[Metrics]`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This gateway's NKN address, when it has an NKN identity (`[Nkn] Seed`).
    pub fn nkn_address(&self) -> Option<String> {
        self.nkn.as_ref().map(|n| n.address().to_string())
    }

    /// NKN HELLOs dropped because their sender is not in `[Nkn]
    /// AllowedPeers` (0 without an NKN identity).
    pub fn nkn_refused_hellos(&self) -> u64 {
        self.nkn.as_ref().map_or(0, |n| n.refused_hellos())
    }

    /// The bound listen addresses (real ports when the configuration said 0).
    /// `[Resi] Name`; a name that defaulted to a first listen address with
    /// port 0 is the address bound.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// The bound `[Reverse] Listen` addresses (real ports when the
    /// configuration said 0).
    pub fn reverse_addrs(&self) -> Vec<SocketAddr> {
        self.reverse_addrs.clone()
    }

    /// Live reverse channels client gateways opened to this gateway.
    pub fn reverse_channels(&self) -> usize {
        self.shared.reverse.as_ref().map_or(0, |c| c.count())
    }

    /// The extensions this gateway answers; handlers can be added and
    /// removed while it runs.
    pub fn extensions(&self) -> &ExtensionRegistry {
        &self.shared.extensions
    }

    /// A shared handle to the extension registry (for bindings that outlive
    /// a borrow).
    pub fn extensions_arc(&self) -> Arc<ExtensionRegistry> {
        self.shared.extensions.clone()
    }

    /// What the upstream turned out to be, while connected.
    pub fn upstream_kind(&self) -> Option<UpstreamKind> {
        self.upstream.kind()
    }

    /// The session this gateway dialled to a resi upstream, while connected.
    pub fn upstream_session(&self) -> Option<SessionHandle> {
        self.upstream.session()
    }

    /// Every configured path to a resi upstream and why it is down (None
    /// for a plain upstream and before the first attempt).
    pub fn upstream_path_book(&self) -> Option<crate::session::paths::PathBook> {
        self.upstream.path_book()
    }

    /// Sessions client gateways opened to this gateway.
    pub fn sessions(&self) -> &Arc<SessionRegistry> {
        &self.registry
    }

    /// Stops accepting, sends GOAWAY on every connection, lets in-flight
    /// calls finish within `shutdown_grace`, cuts the rest, closes every
    /// session. When it returns, none of the gateway's tasks runs.
    pub async fn shutdown(mut self) {
        let Some((server, manager)) = self.tasks.take() else { return };
        self.stop_server.cancel();
        let _ = server.await;
        self.stop_upstream.cancel();
        let _ = manager.await;
        if let Some(nkn) = self.nkn.take() {
            nkn.close();
        }
        tracing::info!(addrs = ?self.local_addrs, "gateway stopped");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.tasks.is_some() {
            self.stop_server.cancel();
            self.stop_upstream.cancel();
        }
        if let Some(nkn) = self.nkn.take() {
            nkn.close();
        }
    }
}

/// Binds `[Metrics] Listen`; the error names the key and the address.
fn bind_metrics(addr: &str) -> Result<tokio::net::TcpListener, GatewayError> {
    listener::bind(addr).map_err(|e| match e {
        GatewayError::Bind { addr, source } => GatewayError::MetricsBind { addr, source },
        other => other,
    })
}

/// Joins NKN with this gateway's identity (`[Nkn] Seed`), accepting RESI
/// paths from other gateways there.
fn start_nkn(cfg: &NknConfig, registry: &Arc<SessionRegistry>, join_warn: Duration) -> Option<Arc<NknEndpoint>> {
    let seed = cfg.seed.as_ref()?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(seed, &mut bytes).ok()?;
    let mut client = ClientConfig::default();
    if !cfg.rpc_servers.is_empty() {
        client.seed_rpc_servers = cfg.rpc_servers.clone();
    }
    let mc = MultiClientConfig { client, num_clients: cfg.subclients.max(1) as usize, ..MultiClientConfig::default() };
    let seeds = mc.client.seed_rpc_servers.clone();
    let endpoint = NknEndpoint::start(Identity::from_seed(bytes), mc, Some(registry.clone()), &cfg.allowed_peers);
    tokio::spawn(report_nkn_join(Arc::downgrade(&endpoint), seeds, join_warn));
    Some(endpoint)
}

/// How long a late join is still reported (at INFO) after that warning.
const NKN_JOIN_LATE: Duration = Duration::from_secs(600);

/// Logs `joined NKN` once the endpoint is actually connected; warns when it
/// cannot reach its seeds within `warn_after` (`[Resi] ConnectTimeout`; its
/// NKN paths then stay down). Ends by itself: joined, given up after [`NKN_JOIN_LATE`], or the
/// gateway closed the endpoint.
async fn report_nkn_join(endpoint: std::sync::Weak<NknEndpoint>, seeds: Vec<String>, warn_after: Duration) {
    match wait_joined(&endpoint, warn_after).await {
        Joined::Yes(address) => return tracing::info!(%address, "joined NKN"),
        Joined::Closed => return,
        Joined::NotYet => {}
    }
    tracing::warn!(?seeds, "NKN: cannot reach the seed nodes within {warn_after:?}; NKN paths stay down until it can");
    if let Joined::Yes(address) = wait_joined(&endpoint, NKN_JOIN_LATE).await {
        tracing::info!(%address, "joined NKN (late)");
    }
}

enum Joined {
    Yes(String),
    NotYet,
    Closed,
}

/// Whether the endpoint connected to NKN within `timeout`.
async fn wait_joined(endpoint: &std::sync::Weak<NknEndpoint>, timeout: Duration) -> Joined {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        match endpoint.upgrade() {
            None => return Joined::Closed,
            Some(e) if e.client().is_ready() => return Joined::Yes(e.address().to_string()),
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Joined::NotYet
}

/// The gateway's name once its listeners are bound: a name that defaulted
/// to a first listen address with port 0 becomes the address bound, so
/// gateways started side by side (tests, notebooks) have distinct names,
/// which the end gateway's restart rule relies on (protocol §3.1).
fn bound_name(name: &str, listen: &[String], bound: &[std::net::SocketAddr]) -> String {
    match (listen.first(), bound.first()) {
        (Some(first), Some(addr)) if first == name && name.ends_with(":0") => addr.to_string(),
        _ => name.to_string(),
    }
}
