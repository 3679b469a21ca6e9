//! The upstream: where calls this hop does not answer go.
//!
//! The configuration does not say what the upstream is, so a manager task
//! finds out: it dials the first `[Tcp] Address` that connects and asks it,
//! with a `Modify` for the redundancy extension (id 1, `pass = false`), to
//! open a session. A resi gateway answers with cookies: the manager joins one
//! path per address to that session and runs HTTP/2 over it. Any other ESI
//! server answers `UNIMPLEMENTED`: the manager keeps the h2c connection it
//! already has and forwards over it.
//!
//! The current connection is published on a `watch` channel; a call reads
//! it without waiting when it is up (a short read lock, an `Arc` clone). When
//! it is down, a call wakes the manager and waits for the next attempt's
//! outcome, at most `connect_timeout`; it then fails with `UNAVAILABLE`
//! naming the upstream. A broken connection or failed session is replaced
//! with exponential backoff capped at [`MAX_BACKOFF`].
//!
//! With `[Tls] UpstreamCa` every connection to `[Tcp] Address` is TLS 1.3:
//! the probe's HTTP/2 with ALPN `h2`, each TCP path with ALPN `resi/1`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Either;
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{LocalBody, ReqBody};
pub(crate) use super::h2client::Ping;
pub(crate) use super::h2client::ResponseBody;
use super::h2client::{self, Sender};
use super::reverse::Opener;
use crate::grpc::{self, Code, Status};
use crate::proto::esi::{Extension, ModifyRequest, ModifyResponse};
use crate::proto::resi::{self, redundancy};
use crate::proto::{MODIFY_PATH, REDUNDANCY_EXTENSION_ID};
use crate::path::nkn::{NknDialer, NknEndpoint};
use crate::path::{PathDialer, TcpDialer};
use crate::session::paths::{NotedDialer, PathBook};
use crate::session::{client, SessionConfig, SessionHandle};
use crate::tls::{Alpn, FirstRead, UpstreamTls};

/// Longest pause between two connection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Attempts woken early by waiting calls are still at least this far apart.
const MIN_ATTEMPT_GAP: Duration = Duration::from_millis(100);
/// A connection that lived shorter than this counts as a failed attempt for
/// the backoff (a flapping upstream is not hammered).
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// The session a forwarded call went over (empty for a plain upstream),
/// returned with its response: a call broken because its session failed
/// with copies that disagreed ends with `DATA_LOSS`, not the `UNAVAILABLE`
/// of a lost connection.
#[derive(Clone, Default)]
pub(crate) struct CallSession(Option<SessionHandle>);

impl std::fmt::Debug for CallSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "CallSession(session)" } else { "CallSession(plain)" })
    }
}

impl CallSession {
    /// The status for a call that failed on this connection: `DATA_LOSS`
    /// (saying the copies disagreed) if its session failed that way,
    /// `fallback` saying "no live path" if its session ended because no
    /// path came back, `fallback` otherwise.
    pub(crate) fn failure(&self, mut fallback: Status) -> Status {
        if let Some(st) = self.data_loss() {
            return st;
        }
        let reason = self.0.as_ref().and_then(SessionHandle::close_reason);
        if let Some(reason @ crate::session::SessionError::ResumeTimeout(_)) = reason {
            fallback.message = format!("{} {reason} ({})", crate::session::NO_LIVE_PATH, fallback.message);
        }
        fallback
    }

    fn data_loss(&self) -> Option<Status> {
        self.0.as_ref().and_then(SessionHandle::close_reason).and_then(|r| r.data_loss_status())
    }
}

/// What kind of upstream this hop forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamKind {
    /// A plain ESI server (or anything that does not speak RESI), over h2c.
    Plain { addr: String },
    /// A resi gateway, over a redundant session.
    Resi { session_id: Bytes, paths: usize },
}

#[derive(Clone)]
enum Link {
    /// Being (re)connected; no attempt outcome yet.
    Connecting,
    Ready {
        tx: Sender,
        kind: UpstreamKind,
        session: Option<SessionHandle>,
    },
    /// The last attempt failed with this error.
    Down {
        error: Arc<str>,
    },
}

#[derive(Clone)]
struct State {
    link: Link,
    /// Finished connection attempts, so a waiting call can tell a fresh
    /// failure from the one it saw when it arrived.
    attempts: u64,
}

/// The calls' side of the upstream manager.
pub(crate) struct Upstream {
    state: watch::Sender<State>,
    kick: Notify,
    addrs: Vec<String>,
    /// `:authority` for requests that arrive without one.
    authority: http::uri::Authority,
    label: String,
    connect_timeout: Duration,
    /// Ask the upstream for a session (false: always plain h2c, for a
    /// client that talks to a gateway as an ordinary ESI client).
    discover: bool,
    /// An NKN path to the next gateway (`[Nkn] Address`), beside the TCP ones.
    nkn: std::sync::OnceLock<(Arc<NknEndpoint>, String)>,
    /// An odd answer to the probe was reported (once per upstream).
    odd_probe_warned: std::sync::atomic::AtomicBool,
    /// Opens a reverse channel over every session this upstream joins
    /// (`[Reverse] Address`).
    reverse: std::sync::OnceLock<Arc<Opener>>,
    /// TLS on every TCP connection to the upstream (`[Tls] UpstreamCa`).
    tls: Option<Arc<UpstreamTls>>,
    /// Every configured path and why it is down (made at the first dial,
    /// once the NKN peer is known).
    book: std::sync::OnceLock<PathBook>,
}

impl Upstream {
    pub(crate) fn new(addrs: Vec<String>, connect_timeout: Duration, tls: Option<UpstreamTls>) -> Arc<Upstream> {
        Upstream::with_discovery(addrs, connect_timeout, true, tls)
    }

    /// Like [`Upstream::new`]; with `discover == false` the upstream is
    /// never asked for a session and is used as a plain gRPC server.
    pub(crate) fn with_discovery(
        addrs: Vec<String>,
        connect_timeout: Duration,
        discover: bool,
        tls: Option<UpstreamTls>,
    ) -> Arc<Upstream> {
        let label = match addrs.len() {
            0 => "(none configured)".to_string(),
            1 => addrs[0].clone(),
            _ => addrs.join(", "),
        };
        let authority =
            addrs.first().and_then(|a| a.parse().ok()).unwrap_or_else(|| http::uri::Authority::from_static("upstream"));
        let (state, _) = watch::channel(State { link: Link::Connecting, attempts: 0 });
        Arc::new(Upstream {
            state,
            kick: Notify::new(),
            addrs,
            authority,
            label,
            connect_timeout,
            discover,
            nkn: std::sync::OnceLock::new(),
            odd_probe_warned: std::sync::atomic::AtomicBool::new(false),
            reverse: std::sync::OnceLock::new(),
            tls: tls.map(Arc::new),
            book: std::sync::OnceLock::new(),
        })
    }

    /// The kind of the current upstream connection, if one is up.
    pub(crate) fn kind(&self) -> Option<UpstreamKind> {
        match &self.state.borrow().link {
            Link::Ready { kind, .. } => Some(kind.clone()),
            _ => None,
        }
    }

    /// The session to a resi upstream, while connected (for statistics).
    pub(crate) fn session(&self) -> Option<SessionHandle> {
        match &self.state.borrow().link {
            Link::Ready { session, .. } => session.clone(),
            _ => None,
        }
    }

    /// Whether a call sent now can reach the upstream: connected, and for a
    /// resi upstream, its session has a live path (health checks).
    pub(crate) async fn usable(&self) -> bool {
        let Some((_, session)) = self.current() else { return false };
        let Some(session) = session else { return true };
        // Bounded: a busy session still answers within this, a stuck one is not usable.
        match tokio::time::timeout(Duration::from_secs(1), session.stats()).await {
            Ok(Some(stats)) => stats.paths.iter().any(|p| p.live),
            _ => false,
        }
    }

    /// Sends one call upstream. A request the dying connection never took is
    /// retried once on the next connection, unless that connection's session
    /// failed because copies disagreed (`DATA_LOSS`). The response comes
    /// with the [`CallSession`] it went over.
    pub(crate) fn send(
        &self,
        mut req: Request<ReqBody>,
    ) -> impl Future<Output = Result<(Response<ResponseBody>, CallSession), Status>> + Send + '_ {
        complete_uri(&mut req, &self.authority);
        send_on(self, req)
    }

    fn unavailable(&self, why: &str) -> Status {
        Status::new(Code::Unavailable, format!("upstream {}: {why}", self.label))
    }

    /// The live connection and its session, if there is one.
    fn current(&self) -> Option<(Sender, Option<SessionHandle>)> {
        match &self.state.borrow().link {
            Link::Ready { tx, session, .. } if !tx.is_closed() => Some((tx.clone(), session.clone())),
            _ => None,
        }
    }

    /// Waits until the upstream is connected (or the next attempt failed).
    pub(crate) async fn ready(&self) -> Result<(), Status> {
        if self.current().is_none() {
            self.wait_ready(None).await?;
        }
        Ok(())
    }

    /// Wakes the manager and waits for a live connection, or for the outcome
    /// of an attempt that finished after this call arrived; no longer than
    /// the `caller`'s deadline.
    async fn wait_ready(&self, caller: Option<Duration>) -> Result<(Sender, Option<SessionHandle>), Status> {
        let base = self.state.borrow().attempts;
        self.kick.notify_one();
        let mut rx = self.state.subscribe();
        let wait = caller.map_or(self.connect_timeout, |t| t.min(self.connect_timeout));
        let deadline = Instant::now() + wait;
        loop {
            {
                let st = rx.borrow_and_update();
                match &st.link {
                    Link::Ready { tx, session, .. } if !tx.is_closed() => return Ok((tx.clone(), session.clone())),
                    Link::Down { error } if st.attempts > base => return Err(self.unavailable(error)),
                    _ => {}
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(self.unavailable("gateway is shutting down")),
                Err(_) if wait < self.connect_timeout => {
                    let why = format!("deadline expired while waiting for upstream {}", self.label);
                    return Err(Status::new(Code::DeadlineExceeded, why));
                }
                Err(_) => {
                    let why = format!("not reachable within {:?}", self.connect_timeout);
                    return Err(self.unavailable(&why));
                }
            }
        }
    }

    fn publish(&self, link: Link, attempt_done: bool) {
        self.state.send_modify(|st| {
            st.link = link;
            if attempt_done {
                st.attempts += 1;
            }
        });
    }

    /// Runs the manager until `stop`, restarting it should it ever panic
    /// (calls would otherwise wait for an upstream nobody connects).
    pub(crate) async fn supervise(self: Arc<Self>, cfg: SessionConfig, stop: CancellationToken) {
        loop {
            let run = AssertUnwindSafe(self.clone().run(cfg.clone(), stop.clone()));
            match run.catch_unwind().await {
                Ok(()) => return,
                Err(_) => {
                    tracing::error!(upstream = %self.label, "upstream manager panicked; restarting it");
                    self.publish(Link::Down { error: "upstream manager failed".into() }, true);
                    tokio::time::sleep(MAX_BACKOFF).await;
                }
            }
        }
    }

    /// The manager task: connect, publish, watch, reconnect; until `stop`.
    async fn run(self: Arc<Self>, cfg: SessionConfig, stop: CancellationToken) {
        let mut backoff = MIN_BACKOFF;
        while !stop.is_cancelled() {
            let started = Instant::now();
            let attempt = tokio::select! {
                _ = stop.cancelled() => break,
                r = self.connect(&cfg) => r,
            };
            match attempt {
                Ok(mut conn) => {
                    match &conn.kind {
                        UpstreamKind::Plain { addr } => tracing::info!(upstream = %self.label, %addr, "upstream connected: plain ESI"),
                        UpstreamKind::Resi { session_id, paths } => {
                            let session = crate::session::driver::hex(session_id);
                            tracing::info!(upstream = %self.label, %session, paths, "upstream connected: RESI session")
                        }
                    }
                    let link =
                        Link::Ready { tx: conn.tx.clone(), kind: conn.kind.clone(), session: conn.session.clone() };
                    self.publish(link, true);
                    let reverse = match (self.reverse.get(), &conn.session) {
                        (Some(opener), Some(_)) => Some(tokio::spawn(opener.clone().keep_open(conn.tx.clone()))),
                        (Some(_), None) => {
                            let why = "[Reverse] Address needs a resi gateway upstream";
                            tracing::warn!(upstream = %self.label, "plain ESI upstream: no reverse channel ({why})");
                            None
                        }
                        (None, _) => None,
                    };
                    let why = tokio::select! {
                        _ = stop.cancelled() => None,
                        why = conn.broken() => Some(why),
                    };
                    self.publish(Link::Connecting, false);
                    if let Some(task) = reverse {
                        task.abort();
                    }
                    conn.close().await;
                    let Some(why) = why else { break };
                    tracing::warn!(upstream = %self.label, "upstream connection lost: {why}");
                    if started.elapsed() >= STABLE_AFTER {
                        backoff = MIN_BACKOFF;
                        continue;
                    }
                }
                Err(error) => {
                    tracing::warn!(upstream = %self.label, "cannot connect upstream: {error}");
                    self.publish(Link::Down { error: error.into() }, true);
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
                _ = self.kick.notified() => {
                    tokio::time::sleep_until(started + MIN_ATTEMPT_GAP).await;
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.publish(Link::Down { error: "gateway is shutting down".into() }, true);
        if let Some(opener) = self.reverse.get() {
            opener.shutdown().await;
        }
    }

    /// Adds an NKN path to `peer` to every session this upstream joins.
    pub(crate) fn set_nkn_peer(&self, endpoint: Arc<NknEndpoint>, peer: String) {
        let _ = self.nkn.set((endpoint, peer));
    }

    /// Opens a reverse channel with `opener` over every session this
    /// upstream joins (set before the manager starts).
    pub(crate) fn set_reverse(&self, opener: Arc<Opener>) {
        let _ = self.reverse.set(opener);
    }

    /// TCP paths first (path id = index in `[Tcp] Address`), then NKN;
    /// each records its failures in the [`PathBook`].
    fn dialers(&self) -> Vec<Box<dyn PathDialer>> {
        let mut dialers: Vec<Box<dyn PathDialer>> =
            self.addrs.iter().map(|addr| Box::new(TcpDialer { addr: addr.clone(), tls: self.tls.clone() }) as Box<dyn PathDialer>).collect();
        if let Some((endpoint, peer)) = self.nkn.get() {
            dialers.push(Box::new(NknDialer { endpoint: endpoint.clone(), peer: peer.clone() }));
        }
        let book = self.book.get_or_init(|| PathBook::new(dialers.iter().map(|d| d.describe())));
        let noted = |(i, inner)| Box::new(NotedDialer { inner, book: book.clone(), path: i as u32 }) as Box<dyn PathDialer>;
        dialers.into_iter().enumerate().map(noted).collect()
    }

    /// Every configured path of a resi upstream and why it is down (None
    /// before the first attempt, and for a plain client).
    pub(crate) fn path_book(&self) -> Option<PathBook> {
        self.book.get().cloned()
    }

    fn path_count(&self) -> usize {
        self.addrs.len() + usize::from(self.nkn.get().is_some())
    }

    /// One attempt: dial, probe, and (for a resi upstream) join its session.
    async fn connect(&self, cfg: &SessionConfig) -> Result<Conn, String> {
        if self.addrs.is_empty() {
            return match self.nkn.get() {
                Some(_) => self.open_over_nkn(cfg).await,
                None => Err("no upstream address configured ([Tcp] Address or [Nkn] Address)".into()),
            };
        }
        let (addr, mut conn) = self.dial_first().await?;
        if !self.discover {
            return Ok(conn);
        }
        let probe = tokio::time::timeout(self.connect_timeout, self.probe(&mut conn.tx, addr, cfg)).await;
        match probe.map_err(|_| format!("{addr}: no answer to the RESI probe within {:?}", self.connect_timeout))?? {
            None => {
                conn.kind = UpstreamKind::Plain { addr: addr.to_string() };
                Ok(conn)
            }
            Some(opened) => {
                conn.close().await;
                self.join_session(opened, cfg).await
            }
        }
    }

    /// HTTP/2 (h2c, or over TLS) to the first address that accepts a TCP
    /// connection.
    async fn dial_first(&self) -> Result<(&str, Conn), String> {
        let mut errors = Vec::new();
        for addr in &self.addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    let (tx, driver) = match &self.tls {
                        Some(tls) => self.h2_over_tls(tls, tcp, addr).await?,
                        None => h2client::handshake(tcp, Ping::On).await.map_err(|e| format!("{addr}: HTTP/2 handshake: {e}"))?,
                    };
                    let kind = UpstreamKind::Plain { addr: addr.clone() };
                    return Ok((addr, Conn { tx, kind, driver, driver_done: false, session: None }));
                }
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: connect timed out after {:?}", self.connect_timeout)),
            }
        }
        Err(errors.join("; "))
    }

    /// HTTP/2 over TLS (ALPN `h2`) on `tcp`, returned once the server's
    /// first bytes arrived: a server that refuses our client certificate
    /// says so only then (TLS 1.3), and that is a connect error.
    async fn h2_over_tls(
        &self,
        tls: &UpstreamTls,
        tcp: TcpStream,
        addr: &str,
    ) -> Result<(Sender, JoinHandle<()>), String> {
        let setup = async {
            let stream = tls.connect(tcp, addr, Alpn::H2).await.map_err(|e| format!("{addr}: TLS handshake: {e}"))?;
            let (stream, first_read) = FirstRead::new(stream);
            let (tx, driver) = h2client::handshake(stream, Ping::On).await.map_err(|e| format!("{addr}: HTTP/2 handshake: {e}"))?;
            match first_read.await {
                Ok(Ok(())) => Ok((tx, driver)),
                Ok(Err(e)) => {
                    driver.abort();
                    Err(format!("{addr}: TLS: {e}"))
                }
                Err(_) => Err(format!("{addr}: the TLS connection ended before the server spoke")),
            }
        };
        tokio::time::timeout(self.connect_timeout, setup)
            .await
            .map_err(|_| format!("{addr}: TLS and HTTP/2 handshake not done within {:?}", self.connect_timeout))?
    }

    /// Asks the upstream to open a session: `Some(cookies)` from a resi
    /// gateway, `None` from a server that does not know extension 1.
    async fn probe(
        &self,
        tx: &mut Sender,
        addr: &str,
        cfg: &SessionConfig,
    ) -> Result<Option<resi::OpenResponse>, String> {
        let open = client::open_request(cfg, self.path_count());
        let data = resi::Redundancy { msg: Some(redundancy::Msg::Open(open)) }.encode_to_vec();
        let ext = Extension { id: REDUNDANCY_EXTENSION_ID, pass: false, data: data.into() };
        let body = grpc::encode_frame(&ModifyRequest { ext: Some(ext) });
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let req = Request::post(format!("{scheme}://{addr}{MODIFY_PATH}"))
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static(grpc::CONTENT_TYPE))
            .header(http::header::TE, HeaderValue::from_static("trailers"))
            .body(Either::Right(LocalBody::full(body)))
            .map_err(|e| e.to_string())?;
        let rsp = tx.send(req).await.map_err(|e| format!("{addr}: probe failed: {}", e.error))?;
        match unary_result(rsp).await {
            Ok(msg) => match decode_opened(msg) {
                Ok(opened) => Ok(Some(opened)),
                Err(e) => {
                    // A server whose `Modify` answers extension 1 without a
                    // valid `opened` (e.g. it echoes every extension) does
                    // not speak RESI: forward to it as a plain ESI server.
                    if !self.odd_probe_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(upstream = %addr, "upstream answered the RESI probe without a valid `opened` ({e}): using it as a plain ESI server");
                    }
                    Ok(None)
                }
            },
            Err(st) if st.code == Code::Unimplemented => Ok(None),
            Err(st) => Err(format!("{addr}: refused the RESI probe: {st}")),
        }
    }

    /// NKN alone: the session is opened in the NKN path's own HELLO (there
    /// is no HTTP/2 to probe with), so the upstream must be a resi gateway.
    async fn open_over_nkn(&self, cfg: &SessionConfig) -> Result<Conn, String> {
        let mut dialers = self.dialers();
        let first = dialers.remove(0);
        let (stream, handle) = client::open_on_path(first, dialers, cfg.clone())
            .await
            .map_err(|e| format!("opening a session over NKN: {e}"))?;
        let session_id = Bytes::copy_from_slice(&handle.id());
        self.watch_paths(&handle);
        match h2client::handshake(stream, Ping::Session).await {
            Ok((tx, driver)) => {
                let kind = UpstreamKind::Resi { session_id, paths: self.path_count() };
                Ok(Conn { tx, kind, driver, driver_done: false, session: Some(handle) })
            }
            Err(e) => {
                handle.close();
                Err(format!("HTTP/2 handshake over the session: {e}"))
            }
        }
    }

    fn watch_paths(&self, session: &SessionHandle) {
        if let Some(book) = self.book.get() {
            book.watch(session);
        }
    }

    /// Joins the session the upstream gateway opened and runs HTTP/2 over it.
    async fn join_session(&self, opened: resi::OpenResponse, cfg: &SessionConfig) -> Result<Conn, String> {
        let session_id = opened.session_id.clone();
        // No timeout of ours around it: `connect_tcp` bounds itself, and a
        // dropped dial would leave its session behind. The session layer is
        // another module: a panic there must not end the manager.
        let dial = client::connect(opened, self.dialers(), cfg.clone());
        let (stream, handle) = match AssertUnwindSafe(dial).catch_unwind().await {
            Err(_) => return Err("session layer panicked while joining paths".into()),
            Ok(Err(e)) => return Err(format!("joining the session: {e}")),
            Ok(Ok(pair)) => pair,
        };
        self.watch_paths(&handle);
        match h2client::handshake(stream, Ping::Session).await {
            Ok((tx, driver)) => {
                let kind = UpstreamKind::Resi { session_id, paths: self.path_count() };
                Ok(Conn { tx, kind, driver, driver_done: false, session: Some(handle) })
            }
            Err(e) => {
                handle.close();
                Err(format!("HTTP/2 handshake over the session: {e}"))
            }
        }
    }
}

impl Connections for Upstream {
    fn current(&self) -> Option<(Sender, CallSession)> {
        Upstream::current(self).map(|(tx, session)| (tx, CallSession(session)))
    }

    async fn wait(&self, caller: Option<Duration>) -> Result<(Sender, CallSession), Status> {
        let (tx, session) = self.wait_ready(caller).await?;
        Ok((tx, CallSession(session)))
    }

    async fn lost(&self) {
        self.kick.notify_one();
        tokio::task::yield_now().await;
    }

    fn failed(&self, why: &str) -> Status {
        self.unavailable(why)
    }
}

/// Where calls find an HTTP/2 connection to go on: the upstream manager's,
/// or a reverse channel.
pub(crate) trait Connections {
    /// A live connection and the session under it, without waiting.
    fn current(&self) -> Option<(Sender, CallSession)>;
    /// Waits for one, no longer than the `caller`'s deadline or the connect
    /// timeout.
    fn wait(&self, caller: Option<Duration>) -> impl Future<Output = Result<(Sender, CallSession), Status>> + Send;
    /// The connection went away before it took a request.
    fn lost(&self) -> impl Future<Output = ()> + Send;
    /// The status of a call that could not be sent.
    fn failed(&self, why: &str) -> Status;
}

/// Sends one call on a connection of `conns`; a request the dying
/// connection never took is retried once on the next one.
pub(crate) async fn send_on<C: Connections + Sync>(
    conns: &C,
    mut req: Request<ReqBody>,
) -> Result<(Response<ResponseBody>, CallSession), Status> {
    let mut retried = false;
    loop {
        let (mut tx, session) = match conns.current() {
            Some(ready) => ready,
            // Boxed: the waiting machinery stays out of the fast path.
            None => {
                let caller = req.headers().get(grpc::GRPC_TIMEOUT).and_then(grpc::parse_timeout);
                Box::pin(conns.wait(caller)).await?
            }
        };
        match tx.send(req).await {
            // Kept with the response, so a body that breaks later can tell
            // a failed-closed session (DATA_LOSS).
            Ok(rsp) => return Ok((rsp, session)),
            Err(e) => {
                if let Some(st) = session.data_loss() {
                    return Err(st);
                }
                match e.request {
                    Some(r) if !retried => {
                        retried = true;
                        req = r;
                        conns.lost().await;
                    }
                    _ => return Err(conns.failed(&e.error.to_string())),
                }
            }
        }
    }
}

/// An upstream's manager task, stopped by [`Manager::stop`] or when dropped.
pub(crate) struct Manager {
    stop: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Manager {
    /// Starts managing `upstream` (inside a tokio runtime).
    pub(crate) fn spawn(upstream: Arc<Upstream>, cfg: SessionConfig) -> Manager {
        let stop = CancellationToken::new();
        let task = tokio::spawn(Upstream::supervise(upstream, cfg, stop.clone()));
        Manager { stop, task: std::sync::Mutex::new(Some(task)) }
    }

    /// Stops the manager and waits until its connection is closed.
    pub(crate) async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One upstream connection: the h2 client, the task driving it and, for a
/// resi upstream, the session under it.
struct Conn {
    tx: Sender,
    kind: UpstreamKind,
    driver: JoinHandle<()>,
    /// The driver task has been awaited to completion (a `JoinHandle` must
    /// not be polled again).
    driver_done: bool,
    session: Option<SessionHandle>,
}

impl Conn {
    /// Resolves when the connection (or its session) is gone, with why.
    async fn broken(&mut self) -> String {
        match self.session.clone() {
            Some(session) => tokio::select! {
                _ = &mut self.driver => {
                    self.driver_done = true;
                    "HTTP/2 connection over the session ended".into()
                }
                e = session.closed() => format!("session ended: {e}"),
            },
            None => {
                let _ = (&mut self.driver).await;
                self.driver_done = true;
                "HTTP/2 connection ended".into()
            }
        }
    }

    /// Tears the connection down and waits for its task: in-flight calls
    /// fail (and report `UNAVAILABLE`).
    async fn close(self) {
        if let Some(s) = &self.session {
            s.close();
        }
        if !self.driver_done {
            self.driver.abort();
            let _ = self.driver.await;
        }
    }
}

/// HTTP/2 needs `:scheme` and `:authority`; keep the caller's if present.
pub(crate) fn complete_uri(req: &mut Request<ReqBody>, authority: &http::uri::Authority) {
    let uri = req.uri();
    if uri.scheme().is_some() && uri.authority().is_some() {
        return;
    }
    let mut parts = uri.clone().into_parts();
    parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
    if parts.authority.is_none() {
        parts.authority = Some(authority.clone());
    }
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(u) = Uri::from_parts(parts) {
        *req.uri_mut() = u;
    }
}

/// The message of a unary gRPC response, or its status.
async fn unary_result(rsp: Response<ResponseBody>) -> Result<Bytes, Status> {
    if let Some(st) = Status::from_response_head(rsp.status(), rsp.headers()) {
        return Err(if st.code == Code::Ok { Status::new(Code::Internal, "OK status without a message") } else { st });
    }
    let (message, trailers) = grpc::read_single(rsp.into_body(), usize::MAX, grpc::Side::Response).await?;
    match trailers.as_ref().and_then(Status::from_headers) {
        Some(st) if st.code != Code::Ok => Err(st),
        _ => message.ok_or_else(|| Status::new(Code::Internal, "unary response without a message")),
    }
}

fn decode_opened(msg: Bytes) -> Result<resi::OpenResponse, String> {
    let rsp = ModifyResponse::decode(msg).map_err(|e| format!("bad ModifyResponse: {e}"))?;
    let ext = rsp.ext.ok_or("ModifyResponse without ext")?;
    if ext.id != REDUNDANCY_EXTENSION_ID {
        return Err(format!("answered extension {} to a redundancy probe", ext.id));
    }
    match resi::Redundancy::decode(ext.data).map_err(|e| format!("bad Redundancy: {e}"))?.msg {
        Some(redundancy::Msg::Opened(o)) => Ok(o),
        _ => Err("redundancy answer is not `opened`".into()),
    }
}
