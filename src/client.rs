//! An in-process ESI client: gRPC calls of any shape, without a socket of
//! its own between the caller and the first hop.
//!
//! A [`Client`] reuses the gateway's upstream machinery
//! ([`crate::gateway::upstream`]): either plain h2c to one gRPC server (a
//! gateway or any ESI server), or — [`Client::redundant`] — a redundant
//! session to an end gateway over several paths. In the second case this
//! process *is* the client gateway: requests go straight from the caller
//! into the HTTP/2 connection that runs over the session, no loopback hop.
//! It is then also a hop for `Modify`: handlers registered on
//! [`Client::extensions`] answer their ids, and an unknown id with
//! `pass = false` is refused here (`UNIMPLEMENTED`), as a client gateway
//! would. With [`Client::redundant_with_reverse`] it also opens the reverse
//! channel on its session and serves the calls coming back with a local ESI
//! server, as a client gateway with `[Reverse] Address` does.
//!
//! Calls take bytes: one message ([`CallBody::Unary`]) or a channel of
//! messages ([`CallBody::Stream`]); the answer is a [`Call`] read message by
//! message. A deadline is sent as `grpc-timeout` and enforced here too.
//! Dropping a call (or the future making it) resets the HTTP/2 stream, so
//! the server sees the cancellation.

// `CallError` carries the trailers: large, but only on the failure path.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{future, FutureExt};
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::{BodyExt, Either};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::extension::{not_implemented, run_handler, ExtensionRegistry};
use crate::gateway::body::LocalBody;
use crate::gateway::reverse::Opener;
use crate::gateway::upstream::{CallSession, Manager, ResponseBody, Upstream, UpstreamKind};
use crate::grpc::{self, Code, Status};
use crate::proto::esi::{Extension, ModifyRequest, ModifyResponse};
use crate::proto::MODIFY_PATH;
use crate::session::{SessionConfig, SessionHandle, NO_LIVE_PATH};
use crate::tls::UpstreamTls;

/// Largest response message accepted unless told otherwise.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// A failed call: its status and trailing metadata.
#[derive(Debug, Clone)]
pub struct CallError {
    pub status: Status,
    pub trailers: HeaderMap,
}

impl CallError {
    pub fn new(code: Code, message: impl Into<String>) -> CallError {
        Status::new(code, message).into()
    }
}

impl From<Status> for CallError {
    fn from(status: Status) -> CallError {
        CallError { status, trailers: HeaderMap::new() }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.status.fmt(f)
    }
}

impl std::error::Error for CallError {}

/// The request messages of a call.
pub enum CallBody {
    /// Exactly one message (unary and server-streaming calls).
    Unary(Bytes),
    /// Messages as the caller produces them; the request stream ends when
    /// the sender is dropped. Use [`CallBody::channel`].
    Stream(mpsc::Receiver<Bytes>),
}

impl CallBody {
    /// A streaming body and its sender (messages unframed; `capacity`
    /// messages may wait).
    pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, CallBody) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (tx, CallBody::Stream(rx))
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Request metadata (`-bin` keys carry raw bytes).
    pub metadata: Vec<(String, Vec<u8>)>,
    /// Deadline of the whole call, from its start.
    pub timeout: Option<Duration>,
}

/// Where a client sends its calls.
pub struct Client {
    upstream: Arc<Upstream>,
    extensions: Arc<ExtensionRegistry>,
    hop: bool,
    max_message_size: usize,
    manager: Manager,
    /// Set by [`Client::close`]: later calls fail at once.
    closed: AtomicBool,
}

impl Client {
    /// A client of one gRPC server (a gateway or any ESI server) over h2c,
    /// or over TLS 1.3 with `tls` (`[Tls] UpstreamCa` and friends). Must be
    /// called inside a tokio runtime; connects in the background.
    pub fn plain(addr: impl Into<String>, connect_timeout: Duration, tls: Option<UpstreamTls>) -> Client {
        let upstream = Upstream::with_discovery(vec![addr.into()], connect_timeout, false, tls);
        Client::start(upstream, SessionConfig::default(), false)
    }

    /// This process as a client gateway: one redundant session to the end
    /// gateway, one TCP path per address, each over TLS with `tls`. (An
    /// upstream that turns out not to speak RESI is used over plain HTTP/2,
    /// like a gateway would.)
    pub fn redundant(
        paths: Vec<String>,
        session: SessionConfig,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Client {
        Client::redundant_with_reverse(paths, session, connect_timeout, tls, Vec::new())
    }

    /// Like [`Client::redundant`]; calls the end gateway's side makes back
    /// (its `[Reverse] Listen`) are served by the local ESI server at the
    /// first of `reverse` that connects, as a client gateway with
    /// `[Reverse] Address` would. Empty `reverse`: no reverse channel.
    pub fn redundant_with_reverse(
        paths: Vec<String>,
        session: SessionConfig,
        connect_timeout: Duration,
        tls: Option<UpstreamTls>,
        reverse: Vec<String>,
    ) -> Client {
        let upstream = Upstream::new(paths, connect_timeout, tls);
        if !reverse.is_empty() {
            upstream.set_reverse(Opener::start(reverse, connect_timeout, DEFAULT_MAX_MESSAGE_SIZE));
        }
        Client::start(upstream, session, true)
    }

    fn start(upstream: Arc<Upstream>, cfg: SessionConfig, hop: bool) -> Client {
        let manager = Manager::spawn(upstream.clone(), cfg);
        Client {
            upstream,
            extensions: Arc::new(ExtensionRegistry::new()),
            hop,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            manager,
            closed: AtomicBool::new(false),
        }
    }

    /// Waits until the upstream is connected (for a redundant client: the
    /// session has at least one path), or the attempt failed.
    pub async fn ready(&self) -> Result<(), Status> {
        self.check_open()?;
        self.upstream.ready().await
    }

    /// Extension handlers answered in this process (see the module doc).
    pub fn extensions(&self) -> &Arc<ExtensionRegistry> {
        &self.extensions
    }

    /// What the upstream turned out to be, while connected.
    pub fn upstream_kind(&self) -> Option<UpstreamKind> {
        self.upstream.kind()
    }

    /// Every configured path and why it is down (None for a plain client
    /// and before the first attempt).
    pub fn path_book(&self) -> Option<crate::session::paths::PathBook> {
        self.upstream.path_book()
    }

    /// The redundant session, while connected (None for a plain client).
    pub fn session(&self) -> Option<SessionHandle> {
        self.upstream.session()
    }

    /// Starts a call of any shape on `path` (`/package.Service/Method`) and
    /// returns once the response headers arrived.
    pub async fn call(&self, path: &str, body: CallBody, opts: &CallOptions) -> Result<Call, CallError> {
        self.check_open()?;
        let session = self.session();
        match self.start_call(path, body, opts).await {
            Err(e) => Err(explain(session.as_ref(), e).await),
            Ok(mut call) => {
                call.live = session;
                Ok(call)
            }
        }
    }

    /// Whether [`Client::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// `UNAVAILABLE` once the client is closed.
    fn check_open(&self) -> Result<(), Status> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(Status::new(Code::Unavailable, "the client is closed")),
            false => Ok(()),
        }
    }

    async fn start_call(&self, path: &str, body: CallBody, opts: &CallOptions) -> Result<Call, CallError> {
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let mut req = Request::post(path)
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static(grpc::CONTENT_TYPE))
            .header(http::header::TE, HeaderValue::from_static("trailers"))
            .header(http::header::USER_AGENT, HeaderValue::from_static(concat!("resi/", env!("CARGO_PKG_VERSION"))))
            .body(Either::Right(match body {
                CallBody::Unary(msg) => LocalBody::full(grpc::frame_bytes(&msg)),
                CallBody::Stream(rx) => LocalBody::Messages(rx),
            }))
            .map_err(|e| CallError::new(Code::InvalidArgument, format!("bad method path {path:?}: {e}")))?;
        if let Some(t) = opts.timeout {
            req.headers_mut().insert(grpc::GRPC_TIMEOUT, grpc::format_timeout(t));
        }
        grpc::metadata_to_headers(&opts.metadata, req.headers_mut())?;
        let (rsp, session) = with_deadline(deadline, self.upstream.send(req)).await??;
        let (parts, body) = rsp.into_parts();
        if let Some(st) = Status::from_response_head(parts.status, &parts.headers) {
            // Trailers-only: no messages, the status is in the headers.
            if st.code != Code::Ok {
                return Err(CallError { status: st, trailers: parts.headers });
            }
        }
        Ok(Call {
            headers: parts.headers,
            body,
            decoder: grpc::Decoder::new(self.max_message_size),
            deadline,
            trailers: None,
            session,
            live: None,
        })
    }

    /// A unary call: one message each way.
    pub async fn unary(&self, path: &str, msg: Bytes, opts: &CallOptions) -> Result<Bytes, CallError> {
        self.unary_reply(path, msg, opts).await.map(|r| r.message)
    }

    /// A unary call, answered with the response's metadata too.
    pub async fn unary_reply(&self, path: &str, msg: Bytes, opts: &CallOptions) -> Result<UnaryReply, CallError> {
        let mut call = self.call(path, CallBody::Unary(msg), opts).await?;
        let Some(message) = call.message().await? else {
            return Err(CallError::new(Code::Internal, "unary call answered OK without a message"));
        };
        if call.message().await?.is_some() {
            return Err(CallError::new(Code::Internal, "unary call answered with more than one message"));
        }
        Ok(UnaryReply { message, trailers: call.trailers.take().unwrap_or_default(), headers: call.headers })
    }

    /// `Modify` with extension `id`: answered by a handler registered here,
    /// refused here (hop rules, redundant client only), or sent upstream.
    /// Returns the answering extension's `data`.
    pub async fn modify(&self, id: u32, pass: bool, data: Bytes, opts: &CallOptions) -> Result<Bytes, CallError> {
        let ext = Extension { id, pass, data };
        if let Some(handler) = self.extensions.get(id) {
            let run = run_handler(handler, ext);
            return Ok(with_deadline(opts.deadline(), run).await??);
        }
        if self.hop && !pass {
            return Err(not_implemented(id).into());
        }
        let msg = ModifyRequest { ext: Some(ext) }.encode_to_vec();
        let reply = self.unary(MODIFY_PATH, msg.into(), opts).await?;
        let rsp = ModifyResponse::decode(reply)
            .map_err(|e| CallError::new(Code::Internal, format!("bad ModifyResponse: {e}")))?;
        Ok(rsp.ext.map(|e| e.data).unwrap_or_default())
    }

    /// Stops the upstream manager and closes the connection (or session).
    /// In-flight calls fail with `UNAVAILABLE`.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.manager.stop().await;
    }
}

impl CallOptions {
    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }
}

/// The answer of a unary call: its one message and its metadata.
pub struct UnaryReply {
    pub headers: HeaderMap,
    pub message: Bytes,
    pub trailers: HeaderMap,
}

/// An answered call: response headers, then messages, then the status.
pub struct Call {
    headers: HeaderMap,
    body: ResponseBody,
    /// Splits the response body into messages (no copy of a message that
    /// arrived in one DATA frame).
    decoder: grpc::Decoder,
    deadline: Option<Instant>,
    trailers: Option<HeaderMap>,
    /// The session the call went over: a stream broken because its copies
    /// disagreed fails with `DATA_LOSS`.
    session: CallSession,
    /// The redundant session, to say so when a call failed with no live path.
    live: Option<SessionHandle>,
}

impl Call {
    /// Response headers (initial metadata).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Trailers of a call that ended with status OK.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// The next response message; `Ok(None)` once the call ended with OK;
    /// the status (with trailers) if it failed.
    pub async fn message(&mut self) -> Result<Option<Bytes>, CallError> {
        match self.next_message().await {
            Err(e) => Err(explain(self.live.as_ref(), e).await),
            ok => ok,
        }
    }

    async fn next_message(&mut self) -> Result<Option<Bytes>, CallError> {
        loop {
            if let Some(msg) = self.take_message()? {
                return Ok(Some(msg));
            }
            if self.trailers.is_some() {
                return Ok(None);
            }
            let frame = match with_deadline(self.deadline, self.body.frame()).await? {
                None => {
                    return Err(CallError::new(Code::Internal, "response ended without a gRPC status"));
                }
                Some(Err(e)) => {
                    let code = if e.reason() == Some(h2::Reason::CANCEL) { Code::Cancelled } else { Code::Unavailable };
                    let st = self.session.failure(Status::new(code, format!("response stream failed: {e}")));
                    return Err(st.into());
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(data) => self.decoder.push(data),
                Err(frame) => {
                    let Ok(trailers) = frame.into_trailers() else { continue };
                    let st = Status::from_headers(&trailers)
                        .unwrap_or_else(|| Status::new(Code::Internal, "trailers without grpc-status"));
                    if st.code != Code::Ok {
                        return Err(CallError { status: st, trailers });
                    }
                    self.trailers = Some(trailers);
                }
            }
        }
    }

    /// The next whole message already received; at the end of the body, an
    /// error if it ended inside one.
    fn take_message(&mut self) -> Result<Option<Bytes>, CallError> {
        let refused = |e: grpc::DecodeError| CallError::from(e.status(grpc::Side::Response));
        match self.decoder.next_message().map_err(refused)? {
            Some(msg) => Ok(Some(msg)),
            None if self.trailers.is_some() => self.decoder.finish().map(|()| None).map_err(refused),
            None => Ok(None),
        }
    }
}

/// A call that failed `UNAVAILABLE` or `DEADLINE_EXCEEDED` while its
/// session had no live path (or after the session ended because none came
/// back) says so, instead of only naming the HTTP/2 symptom.
async fn explain(session: Option<&SessionHandle>, mut e: CallError) -> CallError {
    if !matches!(e.status.code, Code::Unavailable | Code::DeadlineExceeded) || e.status.message.starts_with(NO_LIVE_PATH) {
        return e;
    }
    let Some(session) = session else { return e };
    let why = match session.close_reason() {
        Some(reason @ crate::session::SessionError::ResumeTimeout(_)) => format!("{NO_LIVE_PATH} {reason}"),
        Some(_) => return e,
        None => match session.stats().await {
            Some(s) if !s.paths.iter().any(|p| p.live) => {
                format!("{NO_LIVE_PATH} every path of the session is down ({} known)", s.paths.len())
            }
            _ => return e,
        },
    };
    e.status.message = format!("{why} ({})", e.status.message);
    e
}

/// Runs `fut` until `deadline`; past it, `DEADLINE_EXCEEDED`.
fn with_deadline<F: std::future::Future>(
    deadline: Option<Instant>,
    fut: F,
) -> impl std::future::Future<Output = Result<F::Output, Status>> {
    // Combinators, not an `async fn`: one that awaits its argument keeps
    // two copies of it in its state, and `fut` is a whole HTTP/2 request
    // (several KiB, moved with every call).
    match deadline {
        None => future::Either::Left(fut.map(Ok)),
        Some(d) => future::Either::Right(tokio::time::timeout_at(d, fut).map(|timed| {
            timed.map_err(|_| Status::new(Code::DeadlineExceeded, "deadline exceeded (local)"))
        })),
    }
}
