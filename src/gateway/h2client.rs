//! The HTTP/2 client side of every upstream connection (to an ESI server,
//! over a session, back over a reverse channel, and the Python client's),
//! on `h2` directly.
//!
//! hyper's HTTP/2 client hands each request to its connection task through
//! a channel, spawns a task that waits for the response and another that
//! pipes the request body, and answers through a oneshot: per forwarded
//! call, two tasks and two channel hops in each gateway, which profiles of
//! the pair at concurrency 64 showed as about a seventh of a gateway's CPU
//! (docs/performance.md). Here the calling future opens the stream itself
//! (`h2`'s `SendRequest` is a handle on the connection's shared state, not
//! a channel) and awaits the response directly. A request body already in
//! hand when the call starts (a unary call, or a `Modify` passed on) is
//! queued in the same poll, so HEADERS and DATA leave together and no task
//! is spawned. A body still arriving is sent by the calling future while
//! it awaits the response head (a unary request's END_STREAM often comes
//! a moment after its message), and by a task of its own only if it is
//! still open when the head arrives (a client stream), with hyper's
//! back-pressure rule: wait for stream capacity before taking the next
//! chunk.
//!
//! The connection's own task drives the socket and, where asked, sends
//! keep-alive PINGs while calls are open ([`Ping`]).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::body::ReqBody;
use super::coalesce::Coalesce;
use super::h2stream::{Pipe, RecvBody};
use super::{FLOW_CONN_WINDOW, FLOW_STREAM_WINDOW, MAX_FRAME_SIZE};

/// Largest response header block accepted from upstream.
const MAX_RESPONSE_HEADERS: u32 = 1 << 20;

/// Whether an HTTP/2 client connection pings its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ping {
    /// Over TCP: a PING every 20 s while calls are open; a peer silent for
    /// 10 s more is gone.
    On,
    /// Over a session: its paths' heartbeats watch the peer, and a failed
    /// session ends the connection. PINGs only while calls are open, every
    /// 5 s, answered within 5 s: they catch an HTTP/2 stream that the
    /// session still carries but that its peer can no longer parse (a
    /// tampered copy taken first in permissive mode, §10.5), which would
    /// otherwise hold every call to its deadline.
    Session,
    /// Never (the reverse channel's connection).
    Off,
}

impl Ping {
    /// How often to ping, and how long to wait for the answer.
    fn schedule(self) -> Option<(Duration, Duration)> {
        match self {
            Ping::On => Some((Duration::from_secs(20), Duration::from_secs(10))),
            Ping::Session => Some((Duration::from_secs(5), Duration::from_secs(5))),
            Ping::Off => None,
        }
    }
}

/// What the connection's task and its senders share.
#[derive(Debug, Default)]
struct ConnState {
    /// The connection is gone, or refuses new streams.
    closed: AtomicBool,
    /// Calls whose response is still awaited or read (keep-alive pings
    /// only while some are).
    open_calls: AtomicUsize,
}

/// Opens calls on one HTTP/2 connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Sender {
    tx: SendRequest<Bytes>,
    state: Arc<ConnState>,
}

/// A call that could not be sent, with its request if the connection never
/// took it (so it can go on another connection).
pub(crate) struct SendError {
    pub error: h2::Error,
    pub request: Option<Request<ReqBody>>,
}

impl Sender {
    /// The connection ended or refuses new calls.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }

    /// Sends `req` (its URI must carry scheme and authority) and waits for
    /// the response head.
    pub(crate) async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<ResponseBody>, SendError> {
        if let Err(error) = poll_fn(|cx| self.tx.poll_ready(cx)).await {
            self.state.closed.store(true, Ordering::Release);
            return Err(SendError { error, request: Some(req) });
        }
        let (parts, body) = req.into_parts();
        let end = body.is_end_stream();
        let call = OpenCall::new(&self.state);
        let (response, stream) = self
            .tx
            .send_request(Request::from_parts(parts, ()), end)
            .map_err(|error| SendError { error, request: None })?;
        let pipe = (!end).then(|| Pipe::new(stream, body, "upstream request body"));
        let rsp = respond_while_piping(response, pipe).await.map_err(|error| SendError { error, request: None })?;
        Ok(rsp.map(|recv| ResponseBody { body: RecvBody::new(recv), _call: call }))
    }
}

/// Counts a call among the connection's open ones while it lives.
#[derive(Debug)]
struct OpenCall(Arc<ConnState>);

impl OpenCall {
    fn new(state: &Arc<ConnState>) -> OpenCall {
        state.open_calls.fetch_add(1, Ordering::Relaxed);
        OpenCall(state.clone())
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.0.open_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An HTTP/2 client connection (prior knowledge) over `io`, driven by its
/// own task. Its small writes wait one turn ([`super::coalesce`]), so a
/// streamed request's HEADERS and first DATA leave in one write.
pub(crate) async fn handshake<I>(io: I, ping: Ping) -> Result<(Sender, JoinHandle<()>), h2::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    connect(io, ping.schedule()).await
}

/// [`handshake`], pinging every `.0` while calls are open and giving up on
/// a peer that does not answer within `.1`.
async fn connect<I>(io: I, pings: Option<(Duration, Duration)>) -> Result<(Sender, JoinHandle<()>), h2::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut conn) = h2::client::Builder::new()
        .initial_window_size(FLOW_STREAM_WINDOW)
        .initial_connection_window_size(FLOW_CONN_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_send_buffer_size(FLOW_STREAM_WINDOW as usize)
        .max_header_list_size(MAX_RESPONSE_HEADERS)
        .enable_push(false)
        .handshake::<_, Bytes>(Coalesce::new(io))
        .await?;
    let state = Arc::new(ConnState::default());
    let pings = pings.and_then(|(every, within)| Some((conn.ping_pong()?, every, within)));
    let watched = state.clone();
    let driver = tokio::spawn(async move {
        let outcome = match pings {
            None => (&mut conn).await.map_err(|e| e.to_string()),
            Some((pinger, every, within)) => tokio::select! {
                done = &mut conn => done.map_err(|e| e.to_string()),
                why = keep_alive(pinger, every, within, || watched.open_calls.load(Ordering::Relaxed) > 0) => Err(why),
            },
        };
        // Dropping the connection fails the calls still open on it.
        drop(conn);
        watched.closed.store(true, Ordering::Release);
        if let Err(e) = outcome {
            tracing::debug!("upstream HTTP/2 connection: {e}");
        }
    });
    Ok((Sender { tx, state }, driver))
}

/// PINGs every `every` while `busy` says so (on a client connection: while
/// calls are open); returns why the peer is gone when one is not answered
/// `within`.
pub(super) async fn keep_alive(mut pinger: h2::PingPong, every: Duration, within: Duration, busy: impl Fn() -> bool) -> String {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !busy() {
            continue;
        }
        if let Err(e) = pinger.send_ping(h2::Ping::opaque()) {
            return format!("PING: {e}");
        }
        match tokio::time::timeout(within, poll_fn(|cx| pinger.poll_pong(cx))).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("PING: {e}"),
            Err(_) => return format!("keep-alive timed out: no PING answer within {within:?}"),
        }
    }
}

/// Awaits the response head while the calling future sends the request
/// body. A unary request's END_STREAM, which often comes a moment after
/// its message, then costs no task; a body still open when the head
/// arrives (a client or bidi stream) is left to a task of its own, so that
/// neither the response nor the body waits for the other.
async fn respond_while_piping(
    mut response: h2::client::ResponseFuture,
    mut pipe: Option<Pipe<ReqBody>>,
) -> Result<Response<RecvStream>, h2::Error> {
    poll_fn(|cx| {
        if let Some(p) = pipe.as_mut() {
            if Pin::new(p).poll(cx).is_ready() {
                pipe = None;
            }
        }
        let head = ready!(Pin::new(&mut response).poll(cx));
        if let Some(p) = pipe.take() {
            tokio::spawn(p);
        }
        Poll::Ready(head)
    })
    .await
}

/// An upstream response's body ([`RecvBody`]), counted among its
/// connection's open calls while it lives.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    body: RecvBody,
    _call: OpenCall,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h2::Reason;
    use crate::gateway::body::LocalBody;
    use http_body_util::{BodyExt, Either};
    use tokio::io::AsyncReadExt;

    const FAST: Option<(Duration, Duration)> = Some((Duration::from_millis(50), Duration::from_millis(50)));

    fn request(body: &'static [u8]) -> Request<ReqBody> {
        Request::post("http://peer/resitest.Echo/Unary").body(Either::Right(LocalBody::full(Bytes::from_static(body)))).unwrap()
    }

    /// A peer that reads everything and never answers, not even a PING.
    fn silent_peer() -> tokio::io::DuplexStream {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while matches!(theirs.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        ours
    }

    #[tokio::test]
    async fn an_unanswered_ping_ends_the_connection_while_a_call_is_open() {
        let (mut tx, driver) = connect(silent_peer(), FAST).await.unwrap();
        let call = tokio::spawn(async move { tx.send(request(b"hi")).await.is_ok() });
        tokio::time::timeout(Duration::from_secs(5), driver).await.expect("connection still open").unwrap();
        assert!(!call.await.unwrap(), "the call succeeded on a dead connection");
    }

    #[tokio::test]
    async fn a_call_dropped_with_its_body_open_resets_upstream_not_with_cancel() {
        // An h2 server that never answers reports how the request body ended.
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            let (req, _respond) = conn.accept().await.unwrap().unwrap();
            tokio::spawn(async move { while conn.accept().await.is_some() {} });
            let mut recv = req.into_body();
            loop {
                match recv.data().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        let (mut tx, _driver) = connect(ours, None).await.unwrap();
        let (body_tx, body_rx) = tokio::sync::mpsc::channel(4);
        body_tx.send(Bytes::from_static(b"part")).await.unwrap();
        let req = Request::post("http://peer/resitest.Echo/ClientStream").body(Either::Right(LocalBody::Raw(body_rx))).unwrap();
        let call = tokio::spawn(async move { tx.send(req).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        call.abort();
        let _ = call.await;
        drop(body_tx);
        let ended = tokio::time::timeout(Duration::from_secs(5), server).await.expect("the server saw no end").unwrap();
        let e = ended.expect_err("a cut request body read as complete");
        assert_eq!(e.reason(), Some(Reason::INTERNAL_ERROR), "{e}");
    }

    #[tokio::test]
    async fn an_idle_connection_is_not_pinged() {
        let (tx, driver) = connect(silent_peer(), FAST).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!driver.is_finished() && !tx.is_closed(), "an idle connection was given up");
    }

    #[tokio::test]
    async fn answered_pings_keep_a_slow_call_open_and_bodies_arrive_whole() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(theirs).await.unwrap();
            let (req, mut respond) = conn.accept().await.unwrap().unwrap();
            let body = tokio::spawn(async move {
                let mut recv = req.into_body();
                let mut got = Vec::new();
                while let Some(chunk) = recv.data().await {
                    let chunk = chunk.unwrap();
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    got.extend_from_slice(&chunk);
                }
                Bytes::from(got)
            });
            // Answer after several ping rounds, while the connection (and
            // with it the PING answers) keeps being polled.
            let answer = async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from_static(b"pong"), false).unwrap();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                send.send_trailers(trailers).unwrap();
            };
            tokio::select! { _ = answer => {}, _ = conn.accept() => panic!("a second request") }
            let got = body.await.unwrap();
            // Serve until the client goes.
            while conn.accept().await.is_some() {}
            got
        });
        let (mut tx, driver) = connect(ours, FAST).await.unwrap();
        let rsp = tx.send(request(b"ping body")).await.ok().expect("call failed");
        let collected = rsp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).unwrap(), "0");
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"pong"));
        assert!(!driver.is_finished());
        drop(tx);
        assert_eq!(server.await.unwrap(), Bytes::from_static(b"ping body"));
        tokio::time::timeout(Duration::from_secs(5), driver).await.expect("dropping the last sender closes").unwrap();
    }
}
