//! The reverse channel: calls from the end gateway's side back to the
//! client gateway's side, over the same redundant session.
//!
//! HTTP/2 requests only travel from the connection's client to its server,
//! and on a session the client gateway is the HTTP/2 client. ESI needs
//! calls both ways (the exchange calls the facility, the facility calls the
//! exchange and the registry), so the client gateway opens one long-lived
//! request, `POST /resi.Resi/Reverse`, on the session's HTTP/2 connection.
//! Its request body carries bytes client gateway → end gateway, its response
//! body the other way; together they are one byte stream, over which runs a
//! second HTTP/2 connection whose client is the *end* gateway. Its bytes
//! ride the session like any call's, so both modes, deduplication and path
//! failover apply unchanged.
//!
//! - [`Opener`] (client gateway, `[Reverse] Address`): opens the channel
//!   whenever the upstream manager has a session, and serves the inner
//!   connection with the proxy service, forwarding to the local ESI server.
//! - [`Channels`] (end gateway, `[Reverse] Listen`): accepts channels on
//!   connections served over a session and forwards the calls of its
//!   reverse listeners over the most recently opened live one.

use std::io;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Either};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::io::StreamReader;
use tokio_util::sync::{CancellationToken, PollSender, WaitForCancellationFutureOwned};

use super::body::{LocalBody, ProxyBody, ReqBody};
use super::h2client::{self, ResponseBody, Sender};
use super::h2stream::RecvBody;
use super::upstream::{complete_uri, send_on, CallSession, Connections, Manager, Ping, Upstream};
use super::{proxy, Shared, Target};
use crate::extension::{CallContext, ExtensionRegistry};
use crate::grpc::{Code, Status};
use crate::proto::REVERSE_PATH;
use crate::session::SessionConfig;

/// `content-type` of the reverse channel's request and response: raw bytes,
/// no gRPC message framing.
pub const CONTENT_TYPE: &str = "application/octet-stream";
/// Chunks of channel bytes queued in each direction before the writer waits.
const PIPE_DEPTH: usize = 32;
/// First pause before a refused or broken channel is reopened (doubled up to
/// [`MAX_REOPEN_DELAY`] while it keeps failing).
const REOPEN_DELAY: Duration = Duration::from_millis(200);
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The byte pipe: one body read, one channel written.

/// Writes go into a channel that feeds an outgoing body; shutdown ends it.
struct ChannelWriter(PollSender<Bytes>);

impl AsyncWrite for ChannelWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let tx = &mut self.get_mut().0;
        ready!(tx.poll_reserve(cx)).map_err(|_| closed())?;
        tx.send_item(Bytes::copy_from_slice(buf)).map_err(|_| closed())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().0.close();
        Poll::Ready(Ok(()))
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "reverse channel closed")
}

/// A reader that ends (EOF) once `cut` is cancelled: how a gateway that
/// shuts down ends the inner connection, whose own task owns the pipe.
struct CutReader<R> {
    inner: R,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CutReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

/// The channel as one byte stream: reads `body`, writes into `tx`; reads
/// end when `cut` is cancelled.
fn pipe<B>(
    body: B,
    tx: mpsc::Sender<Bytes>,
    cut: CancellationToken,
) -> impl AsyncRead + AsyncWrite + Unpin + Send + 'static
where
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let inner = StreamReader::new(body.into_data_stream().map_err(io::Error::other));
    let reader = CutReader { inner, cut: Box::pin(cut.cancelled_owned()) };
    tokio::io::join(reader, ChannelWriter(PollSender::new(tx)))
}

// ---------------------------------------------------------------------------
// Client gateway side

/// Opens the reverse channel over the sessions of one upstream and serves
/// the calls that come back through it.
pub(crate) struct Opener {
    /// The proxy state of the inner connection: its upstream is the local
    /// ESI server (plain h2c); it knows no extensions.
    shared: Arc<Shared>,
    local: Arc<Upstream>,
    manager: Manager,
    /// Cancelled at shutdown: ends the inner connection.
    stop: CancellationToken,
}

impl Opener {
    /// Starts the connection manager of the local ESI server at `addrs`
    /// (the first that connects); must run inside a tokio runtime.
    pub(crate) fn start(addrs: Vec<String>, connect_timeout: Duration, max_message_size: usize) -> Arc<Opener> {
        let local = Upstream::with_discovery(addrs, connect_timeout, false, None);
        let manager = Manager::spawn(local.clone(), SessionConfig::default());
        let shared = Arc::new(Shared::new(
            Target::Upstream(local.clone()),
            None,
            Arc::new(ExtensionRegistry::new()),
            max_message_size,
        ));
        Arc::new(Opener { shared, local, manager, stop: CancellationToken::new() })
    }

    /// Keeps one reverse channel open on `outer` (the session's HTTP/2
    /// connection) until that connection closes; the caller aborts this
    /// task when the session ends.
    pub(crate) async fn keep_open(self: Arc<Self>, mut outer: Sender) {
        let mut delay = REOPEN_DELAY;
        while !outer.is_closed() {
            let started = Instant::now();
            match self.run_once(&mut outer).await {
                Ok(()) => tracing::debug!("reverse channel ended"),
                Err(e) => tracing::warn!("reverse channel: {e}"),
            }
            if started.elapsed() > Duration::from_secs(1) {
                delay = REOPEN_DELAY;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_REOPEN_DELAY);
        }
    }

    /// Opens the channel and serves the inner HTTP/2 connection until it ends.
    async fn run_once(&self, outer: &mut Sender) -> Result<(), String> {
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let req = Request::post(format!("http://resi{REVERSE_PATH}"))
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))
            .body(Either::Right(LocalBody::Raw(rx)))
            .map_err(|e| e.to_string())?;
        let rsp = outer.send(req).await.map_err(|e| format!("cannot open: {}", e.error))?;
        if let Some(st) = Status::from_response_head(rsp.status(), rsp.headers()) {
            return Err(format!("refused by the end gateway: {st}"));
        }
        tracing::info!(local = ?self.local.kind(), "reverse channel open");
        let io = pipe(rsp.into_body(), tx, self.stop.clone());
        let shared = self.shared.clone();
        let ctx = Arc::new(CallContext::default());
        let svc = move |req| proxy::handle(shared.clone(), ctx.clone(), req);
        self.shared.h2_session.serve(io, svc).await.map_err(|e| format!("inner HTTP/2 connection: {e}"))
    }

    /// Ends the inner connection and stops the local ESI server's
    /// connection manager.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.manager.stop().await;
    }
}

// ---------------------------------------------------------------------------
// End gateway side

/// The reverse channels client gateways opened to this gateway.
pub(crate) struct Channels {
    /// Live channels, oldest first.
    open: Mutex<Vec<Sender>>,
    /// Bumped on every change, so waiting calls look again.
    changed: watch::Sender<u64>,
    connect_timeout: Duration,
    closing: CancellationToken,
    authority: http::uri::Authority,
}

impl Channels {
    pub(crate) fn new(connect_timeout: Duration) -> Arc<Channels> {
        Arc::new(Channels {
            open: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            connect_timeout,
            closing: CancellationToken::new(),
            authority: http::uri::Authority::from_static("resi-reverse"),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a `/resi.Resi/Reverse` request that arrived over a session:
    /// responds at once and runs an HTTP/2 client over the two bodies.
    pub(crate) fn accept(self: &Arc<Self>, req: Request<RecvBody>) -> Response<ProxyBody> {
        if self.closing.is_cancelled() {
            return Status::new(Code::Unavailable, "the gateway is shutting down").to_response();
        }
        let (tx, rx) = mpsc::channel(PIPE_DEPTH);
        let io = pipe(req.into_body(), tx, self.closing.clone());
        let channels = self.clone();
        tokio::spawn(async move {
            match h2client::handshake(io, Ping::Off).await {
                Ok((sender, driver)) => {
                    channels.add(sender);
                    let _ = driver.await;
                    channels.prune();
                    tracing::debug!("reverse channel closed");
                }
                Err(e) => tracing::debug!("reverse channel: HTTP/2 handshake failed: {e}"),
            }
        });
        let mut rsp = Response::new(ProxyBody::Raw(rx));
        rsp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        rsp
    }

    fn add(&self, sender: Sender) {
        if self.closing.is_cancelled() {
            return; // dropping the sender closes the inner connection
        }
        let channels = {
            let mut open = self.open();
            open.retain(|s| !s.is_closed());
            open.push(sender);
            open.len()
        };
        tracing::info!(channels, "reverse channel accepted");
        self.changed.send_modify(|n| *n += 1);
    }

    fn prune(&self) {
        self.open().retain(|s| !s.is_closed());
        self.changed.send_modify(|n| *n += 1);
    }

    /// Number of live reverse channels.
    pub(crate) fn count(&self) -> usize {
        self.open().iter().filter(|s| !s.is_closed()).count()
    }

    /// Sends one call over the most recent channel, waiting up to the
    /// connect timeout (or the caller's deadline) for one to open.
    pub(crate) fn send(
        &self,
        mut req: Request<ReqBody>,
    ) -> impl Future<Output = Result<(Response<ResponseBody>, CallSession), Status>> + Send + '_ {
        complete_uri(&mut req, &self.authority);
        send_on(self, req)
    }

    /// Shutdown, once the reverse listeners' calls are done: refuse new
    /// channels and end the open ones (their inner connections see EOF), so
    /// the sessions' connections can drain.
    pub(crate) fn close(&self) {
        self.closing.cancel();
        self.open().clear();
        self.changed.send_modify(|n| *n += 1);
    }
}

impl Connections for Channels {
    /// The most recently opened live channel.
    fn current(&self) -> Option<(Sender, CallSession)> {
        let tx = self.open().iter().rev().find(|s| !s.is_closed()).cloned()?;
        Some((tx, CallSession::default()))
    }

    async fn wait(&self, caller: Option<Duration>) -> Result<(Sender, CallSession), Status> {
        let mut rx = self.changed.subscribe();
        let wait = caller.map_or(self.connect_timeout, |t| t.min(self.connect_timeout));
        let deadline = Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            if self.closing.is_cancelled() {
                return Err(unavailable("the gateway is shutting down"));
            }
            if let Some(ready) = self.current() {
                return Ok(ready);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(_) => {}
                Err(_) if wait < self.connect_timeout => {
                    let why = "deadline expired while waiting for a reverse channel";
                    return Err(Status::new(Code::DeadlineExceeded, why));
                }
                Err(_) => {
                    return Err(unavailable(&format!(
                        "no reverse channel: no client gateway with [Reverse] Address has a session to this gateway (waited {:?})",
                        self.connect_timeout
                    )))
                }
            }
        }
    }

    async fn lost(&self) {
        self.prune();
    }

    fn failed(&self, why: &str) -> Status {
        unavailable(&format!("reverse channel failed: {why}"))
    }
}

fn unavailable(why: &str) -> Status {
    Status::new(Code::Unavailable, why.to_string())
}
