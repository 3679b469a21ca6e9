//! Listening sockets, protocol sniffing, connection lifetimes.
//!
//! One listener port carries both ESI clients (HTTP/2 prior knowledge) and
//! RESI paths from a client gateway, told apart by their first bytes
//! (`PRI ` vs `RESI`), peeked, not consumed. A supervisor task owns every
//! connection task, so shutdown can stop accepting, send GOAWAY, wait for
//! in-flight calls up to the grace period, cut the rest, and know that
//! nothing is left running.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{proxy, GatewayError, Shared};
use crate::path::tcp::PREFACE;
use crate::session::registry::SessionRegistry;
use crate::session::SessionStream;

/// A connection that has not shown 4 bytes by then is closed.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// After sessions are closed at shutdown, how long their path tasks get to
/// say goodbye before they are cut.
const PATH_CLOSE_GRACE: Duration = Duration::from_secs(1);

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
        let mut paths = JoinSet::new();
        let (path_tx, mut path_rx) = mpsc::unbounded_channel::<TcpStream>();
        let mut next = 0usize;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                accepted = accept_any(&self.listeners, &mut next) => match accepted {
                    Ok((tcp, peer)) => {
                        http.spawn(connection(tcp, peer, self.shared.clone(), path_tx.clone(), phase.clone()));
                    }
                    Err(e) => {
                        // EMFILE and friends: do not spin.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
                Some(tcp) = path_rx.recv() => {
                    let registry = self.registry.clone();
                    let hard = phase.hard.clone();
                    paths.spawn(async move {
                        tokio::select! {
                            _ = registry.accept_tcp_path(tcp) => {}
                            _ = hard.cancelled() => {}
                        }
                    });
                }
                Some(stream) = self.sessions.recv() => {
                    tracing::debug!("serving an established session");
                    http.spawn(serve_h2(stream, None, self.shared.clone(), phase.clone()));
                }
                Some(done) = http.join_next(), if !http.is_empty() => log_join(done),
                Some(done) = paths.join_next(), if !paths.is_empty() => log_join(done),
            }
        }
        self.wind_down(phase, http, paths).await;
    }

    async fn wind_down(self, phase: Phase, mut http: JoinSet<()>, mut paths: JoinSet<()>) {
        drop(self.listeners); // refuse new connections from here on
        tracing::info!(connections = http.len(), "gateway shutting down");
        phase.graceful.cancel();
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(done) = http.join_next().await {
                log_join(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(remaining = http.len(), "grace period over: cutting remaining calls");
        }
        phase.hard.cancel();
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
    paths: mpsc::UnboundedSender<TcpStream>,
    phase: Phase,
) {
    let _ = tcp.set_nodelay(true);
    let sniffed = tokio::select! {
        s = sniff(&tcp) => s,
        _ = phase.graceful.cancelled() => Sniffed::Gone,
    };
    match sniffed {
        Sniffed::Http => serve_h2(tcp, Some(peer), shared, phase).await,
        Sniffed::Resi => {
            tracing::debug!(%peer, "RESI path connection");
            let _ = paths.send(tcp);
        }
        Sniffed::Gone => tracing::debug!(%peer, "connection closed before it said what it is"),
    }
}

/// Looks at the first bytes without consuming them. Decides as soon as they
/// differ from the RESI preface (an HTTP/2 preface differs at byte 0).
async fn sniff(tcp: &TcpStream) -> Sniffed {
    let deadline = Instant::now() + SNIFF_TIMEOUT;
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

/// Serves one HTTP/2 connection (a TCP client from `peer`, or an
/// established session) until it ends, GOAWAY on graceful shutdown, dropped
/// on hard shutdown. Each request carries the peer's address.
async fn serve_h2<I>(io: I, peer: Option<SocketAddr>, shared: Arc<Shared>, phase: Phase)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(proxy::Peer(peer));
        }
        proxy::handle(svc_shared.clone(), req)
    });
    let conn = shared.h2_server.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
            return;
        }
        _ = phase.graceful.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = phase.hard.cancelled() => {}
    }
}
