//! Listening sockets, protocol sniffing, connection lifetimes.
//!
//! One listener port carries both ESI clients (HTTP/2 prior knowledge) and
//! RESI paths from a client gateway, told apart by their first bytes
//! (`PRI ` vs `RESI`), peeked, not consumed. With `[Tls] Cert` every
//! connection is TLS 1.3 first, and the same first bytes are read inside
//! it (and then served again, [`Rewind`]). A supervisor task owns every
//! connection task, so shutdown can stop accepting, send GOAWAY, wait for
//! in-flight calls up to the grace period, cut the rest, and know that
//! nothing is left running.
//!
//! Every accepted connection has one handshake deadline (`[Resi]
//! HandshakeTimeout` from accept) to finish its TLS handshake (if any), be
//! sniffed and either complete its HTTP/2 preface and first SETTINGS, or
//! its RESI preface and HELLO; past it, it is closed. At most `[Resi]
//! MaxConnections` are served at once: beyond that, each new connection is
//! accepted and closed at once (the newest goes, the listener keeps
//! accepting). See [`super::guard`].

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::guard::{Activity, Greeting, Tracked};
use super::{proxy, GatewayError, Shared};
use crate::extension::CallContext;
use crate::path::tcp::PREFACE;
use crate::session::driver::PathIo;
use crate::session::registry::SessionRegistry;
use crate::session::SessionStream;
use crate::tls::ChannelBinding;

/// After sessions are closed at shutdown, how long their path tasks get to
/// say goodbye before they are cut.
const PATH_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After GOAWAY, a connection with no call in flight for this long is
/// closed without waiting for the peer to acknowledge it.
const DRAINED_SETTLE: Duration = Duration::from_millis(100);

/// Binds one `[Tcp] Listen` address (the first of its resolutions that
/// binds), with `SO_REUSEADDR` so a restarted gateway gets its port back.
pub(crate) fn bind(addr: &str) -> Result<TcpListener, GatewayError> {
    let err = |source| GatewayError::Bind { addr: addr.to_string(), source };
    let mut last = None;
    for sa in std::net::ToSocketAddrs::to_socket_addrs(addr).map_err(err)? {
        match bind_one(sa) {
            Ok(l) => return TcpListener::from_std(l).map_err(err),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| std::io::Error::other("the name resolves to no address"))))
}

fn bind_one(sa: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(sa), Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&sa.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Everything the supervisor needs.
pub(crate) struct Supervisor {
    pub listeners: Vec<TcpListener>,
    pub sessions: mpsc::Receiver<SessionStream>,
    pub registry: Arc<SessionRegistry>,
    pub shared: Arc<Shared>,
    pub stop: CancellationToken,
    pub grace: Duration,
    /// `[Reverse] Listen`: ESI clients whose calls go back over a reverse
    /// channel, served with `reverse_shared`.
    pub reverse_listeners: Vec<TcpListener>,
    pub reverse_shared: Option<Arc<Shared>>,
    /// TLS on every accepted connection (`[Tls] Cert`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// One per connection served (`[Resi] MaxConnections`); shared with
    /// the metrics, which report how many are taken.
    pub permits: Arc<Semaphore>,
}

/// A RESI path connection on its way to the session registry, with its
/// handshake deadline and its place among the connections.
struct PathConn {
    io: Box<dyn PathIo>,
    peer: SocketAddr,
    channel: ChannelBinding,
    deadline: Instant,
    permit: OwnedSemaphorePermit,
}

/// Cancellation given to every connection task.
#[derive(Clone)]
struct Phase {
    /// Send GOAWAY, finish in-flight calls.
    graceful: CancellationToken,
    /// Drop the connection now.
    hard: CancellationToken,
}

impl Supervisor {
    /// Accepts until `stop`, then shuts every connection down.
    pub(crate) async fn run(mut self) {
        let phase = Phase { graceful: CancellationToken::new(), hard: CancellationToken::new() };
        let mut http = JoinSet::new();
        let mut reverse = JoinSet::new();
        let mut paths = JoinSet::new();
        let (path_tx, mut path_rx) = mpsc::unbounded_channel::<PathConn>();
        let permits = self.permits.clone();
        let mut next = 0usize;
        let mut next_reverse = 0usize;
        // Refusals so far, and when one was last logged (at most once a second).
        let (mut refused, mut last_warned) = (0u64, None);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                accepted = accept_any(&self.listeners, &mut next) => match accepted {
                    Ok((tcp, peer)) => match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (shared, paths, phase) = (self.shared.clone(), path_tx.clone(), phase.clone());
                            match &self.tls {
                                Some(tls) => http.spawn(tls_connection(tcp, peer, tls.clone(), shared, paths, phase, permit)),
                                None => http.spawn(connection(tcp, peer, shared, paths, phase, permit)),
                            };
                        }
                        Err(_) => {
                            drop(tcp);
                            refused += 1;
                            if last_warned.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) {
                                tracing::warn!(%peer, refused, "connection refused: [Resi] MaxConnections reached");
                                last_warned = Some(Instant::now());
                            }
                        }
                    },
                    Err(e) => {
                        // EMFILE and friends: do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                accepted = accept_any(&self.reverse_listeners, &mut next_reverse) => match (accepted, &self.reverse_shared) {
                    (Ok((tcp, peer)), Some(shared)) => {
                        let _ = tcp.set_nodelay(true);
                        let deadline = Instant::now() + shared.handshake_timeout;
                        let (io, greeted) = Greeting::new(tcp);
                        let client = Some(Client { deadline, greeted, peer });
                        reverse.spawn(serve_h2(io, shared.clone(), CallContext::default(), phase.clone(), client));
                    }
                    (Ok(_), None) => {}
                    (Err(e), _) => {
                        tracing::warn!("accept failed on a reverse listener: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(conn) = path_rx.recv() => {
                    let registry = self.registry.clone();
                    let hard = phase.hard.clone();
                    paths.spawn(async move {
                        let peer = conn.peer.to_string();
                        let timeout = conn.deadline.saturating_duration_since(Instant::now());
                        tokio::select! {
                            _ = registry.accept_path(conn.io, &peer, Some(conn.peer.ip()), conn.channel, timeout) => {}
                            _ = hard.cancelled() => {}
                        }
                        drop(conn.permit); // established paths count against their session
                    });
                }
                Some(stream) = self.sessions.recv() => {
                    tracing::debug!("serving an established session");
                    http.spawn(serve_h2(stream, self.shared.clone(), CallContext::over_session(), phase.clone(), None));
                }
                Some(done) = http.join_next(), if !http.is_empty() => log_join(done),
                Some(done) = reverse.join_next(), if !reverse.is_empty() => log_join(done),
                Some(done) = paths.join_next(), if !paths.is_empty() => log_join(done),
            }
        }
        self.wind_down(phase, http, reverse, paths).await;
    }

    async fn wind_down(self, phase: Phase, mut http: JoinSet<()>, mut reverse: JoinSet<()>, mut paths: JoinSet<()>) {
        drop(self.listeners); // refuse new connections from here on
        drop(self.reverse_listeners);
        tracing::info!(connections = http.len() + reverse.len(), "gateway shutting down");
        phase.graceful.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            // Calls of the reverse listeners first: they need the reverse
            // channels, long-lived calls that are then ended so the session
            // connections carrying them can drain.
            while let Some(done) = reverse.join_next().await {
                log_join(done);
            }
            if let Some(channels) = &self.shared.reverse {
                channels.close();
            }
            while let Some(done) = http.join_next().await {
                log_join(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(remaining = http.len(), "grace period over: cutting remaining calls");
        }
        phase.hard.cancel();
        if let Some(channels) = &self.shared.reverse {
            channels.close();
        }
        reverse.shutdown().await;
        http.shutdown().await;
        self.registry.close_all();
        let _ = tokio::time::timeout(PATH_CLOSE_GRACE, async { while paths.join_next().await.is_some() {} }).await;
        paths.shutdown().await;
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!("connection task panicked: {e}");
        }
    }
}

/// Accepts from whichever listener is ready, starting after the last one
/// served so no listener starves another.
async fn accept_any(listeners: &[TcpListener], next: &mut usize) -> std::io::Result<(TcpStream, SocketAddr)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let idx = (*next + i) % n;
            if let Poll::Ready(r) = listeners[idx].poll_accept(cx) {
                *next = idx + 1;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

enum Sniffed {
    Http,
    Resi,
    Gone,
}

/// One accepted TCP connection: sniff, then serve HTTP/2 or hand the path to
/// the supervisor.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    paths: mpsc::UnboundedSender<PathConn>,
    phase: Phase,
    permit: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + shared.handshake_timeout;
    let _ = tcp.set_nodelay(true);
    let sniffed = tokio::select! {
        s = sniff(&tcp, deadline) => s,
        _ = phase.graceful.cancelled() => Sniffed::Gone,
    };
    match sniffed {
        Sniffed::Http => {
            let (io, greeted) = Greeting::new(tcp);
            let ctx = CallContext { peer: Some(peer), ..CallContext::default() };
            serve_h2(io, shared, ctx, phase, Some(Client { deadline, greeted, peer })).await;
            drop(permit);
        }
        Sniffed::Resi => {
            tracing::debug!(%peer, "RESI path connection");
            let conn = PathConn { io: Box::new(tcp), peer, channel: ChannelBinding::default(), deadline, permit };
            let _ = paths.send(conn);
        }
        Sniffed::Gone => tracing::debug!(%peer, "connection closed before it said what it is (or by its handshake deadline)"),
    }
}

/// One accepted connection on a TLS listener: handshake, then the same
/// sniff inside TLS. Calls learn the client certificate, paths the whole
/// [`ChannelBinding`].
async fn tls_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    paths: mpsc::UnboundedSender<PathConn>,
    phase: Phase,
    permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + shared.handshake_timeout;
    let handshake = tokio::select! {
        r = tokio::time::timeout_at(deadline, tls.accept(tcp)) => r,
        _ = phase.graceful.cancelled() => return,
    };
    let mut stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no TLS handshake by the handshake deadline");
            return;
        }
    };
    let channel = ChannelBinding::of(stream.get_ref().1);
    let sniffed = tokio::select! {
        s = tokio::time::timeout_at(deadline, sniff_read(&mut stream)) => s.unwrap_or(None),
        _ = phase.graceful.cancelled() => None,
    };
    let Some((sniffed, first)) = sniffed else {
        tracing::debug!(%peer, "TLS connection closed before it said what it is");
        return;
    };
    let io = Rewind { prefix: first, inner: stream };
    match sniffed {
        Sniffed::Http => {
            let (io, greeted) = Greeting::new(io);
            let ctx = CallContext { peer: Some(peer), peer_certificate: channel.peer_certificate, ..CallContext::default() };
            serve_h2(io, shared, ctx, phase, Some(Client { deadline, greeted, peer })).await;
            drop(permit);
        }
        Sniffed::Resi => {
            tracing::debug!(%peer, "RESI path connection (TLS)");
            let _ = paths.send(PathConn { io: Box::new(io), peer, channel, deadline, permit });
        }
        Sniffed::Gone => {}
    }
}

/// Reads until the first bytes tell HTTP/2 from a RESI path (as [`sniff`]
/// does, but consuming them): what it is and the bytes read.
async fn sniff_read<S: AsyncRead + Unpin>(stream: &mut S) -> Option<(Sniffed, Bytes)> {
    let mut buf = [0u8; 4];
    let mut n = 0;
    while n < buf.len() {
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => n += k,
        }
        if buf[..n] != PREFACE[..n] {
            return Some((Sniffed::Http, Bytes::copy_from_slice(&buf[..n])));
        }
    }
    Some((Sniffed::Resi, Bytes::copy_from_slice(&buf)))
}

/// A stream whose first bytes were read to sniff it: they are read again
/// before the rest.
struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

crate::tls::write_through!(Rewind);

/// Looks at the first bytes without consuming them. Decides as soon as they
/// differ from the RESI preface (an HTTP/2 preface differs at byte 0).
async fn sniff(tcp: &TcpStream, deadline: Instant) -> Sniffed {
    let mut buf = [0u8; 4];
    let mut pause = Duration::from_millis(1);
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Sniffed::Gone,
        };
        if n == 0 {
            return Sniffed::Gone;
        }
        if buf[..n] != PREFACE[..n] {
            return Sniffed::Http;
        }
        if n == buf.len() {
            return Sniffed::Resi;
        }
        // peek returns at once while fewer bytes are buffered: wait a little.
        if Instant::now() + pause > deadline {
            return Sniffed::Gone;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// What is watched on an ESI client's connection (not on a session, whose
/// paths have their own handshake and heartbeats).
struct Client {
    /// Handshake deadline, from accept.
    deadline: Instant,
    /// Fires once the preface and first SETTINGS have been read.
    greeted: tokio::sync::oneshot::Receiver<()>,
    peer: SocketAddr,
}

/// Why a connection is being closed by this side.
enum Close {
    /// Gateway shutdown.
    Shutdown,
    /// No open call for `IdleTimeout`.
    Idle,
}

/// Serves one HTTP/2 connection (a TCP client or an established session)
/// until it ends, GOAWAY on graceful shutdown or when idle, dropped on hard
/// shutdown or when a client misses its handshake deadline.
/// `ctx` tells every call what is known about the connection.
async fn serve_h2<I>(io: I, shared: Arc<Shared>, ctx: CallContext, phase: Phase, client: Option<Client>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let svc_shared = shared.clone();
    // Only an ESI client's connection is idle-timed: a session's calls
    // skip the bookkeeping.
    let svc_activity = client.is_some().then(|| activity.clone());
    let h2 = if ctx.over_session { shared.h2_session.clone() } else { shared.h2_server.clone() };
    let ctx = Arc::new(ctx);
    let svc = move |req| {
        let call = svc_activity.as_ref().map(Activity::call);
        // A combinator, not `async move { rsp.await... }`, which would hold
        // the call's future twice (docs/performance.md).
        let rsp = proxy::handle(svc_shared.clone(), ctx.clone(), req);
        rsp.map(|r| r.map(|body| Tracked::new(body, call)))
    };
    let mut conn = h2.serve(io, svc);
    let watch = watch_client(client, &activity, shared.idle_timeout);
    let close = tokio::select! {
        r = &mut conn => {
            if let Err(e) = r {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
            return;
        }
        close = watch => match close {
            Some(close) => close,
            None => return, // handshake deadline missed: drop the connection
        },
        _ = phase.graceful.cancelled() => Close::Shutdown,
    };
    conn.graceful_shutdown();
    let limit = match close {
        Close::Shutdown => None,
        // A peer that does not take its GOAWAY gets one handshake time.
        Close::Idle => Some(Instant::now() + shared.handshake_timeout),
    };
    // Done when the peer took the GOAWAY, or as soon as no call is in
    // flight: over a session with no live path the GOAWAY exchange cannot
    // complete, and waiting for it would hold `stop()` for the whole grace.
    tokio::select! {
        _ = &mut conn => {}
        _ = phase.hard.cancelled() => {}
        _ = sleep_until_opt(limit) => {}
        _ = activity.idle_for(DRAINED_SETTLE) => {}
    }
}

/// For a client: `None` if the handshake deadline passes before its
/// greeting, then `Some(Idle)` once it has no open call for `idle`. For a
/// session: never.
async fn watch_client(client: Option<Client>, activity: &Activity, idle: Duration) -> Option<Close> {
    let Some(client) = client else { return std::future::pending().await };
    match tokio::time::timeout_at(client.deadline, client.greeted).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return std::future::pending().await, // connection ended first: its server reports it
        Err(_) => {
            tracing::info!(peer = %client.peer, "closed: no HTTP/2 preface and SETTINGS by the handshake deadline");
            return None;
        }
    }
    activity.idle_for(idle).await;
    tracing::debug!(peer = %client.peer, "closing idle connection (GOAWAY)");
    Some(Close::Idle)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
