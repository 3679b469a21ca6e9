//! The HTTP/2 server side of every gateway connection (an ESI client's,
//! over TCP or TLS; a session's; a reverse channel's), on `h2` directly.
//!
//! hyper's HTTP/2 server spawns a task for every request stream, which runs
//! the service's future and then pipes the response body, so each forwarded
//! call cost a task spawn and a wake-up of that task from the connection's
//! (and back) at every step (a profile of the pair at concurrency 64 put
//! those tasks, with the calls they ran, at a fifth of a client gateway's
//! samples). Here a call runs inside its connection's own task:
//! the connection keeps its open calls in a `FuturesUnordered`, which polls
//! only the calls that were woken, and each call answers its own stream
//! (the head, then the body with h2's flow control, then the trailers,
//! [`Pipe`]). After its calls have run, the connection is polled once more,
//! so what they queued leaves in the same turn. Measured against hyper's
//! server: c1 through the two-process pair 122 against 147 µs, c64 the
//! same (docs/performance.md, "Tried on 2026-12-03").
//!
//! The limits are h2's own, set as hyper was given them ([`Server::new`]);
//! a PING watch replaces hyper's keep-alive timer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::{Handshake, SendResponse};
use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};

use super::h2client::keep_alive;
use super::h2stream::{Pipe, RecvBody, SendBody};
use super::{FLOW_CONN_WINDOW, FLOW_STREAM_WINDOW, MAX_CONCURRENT_STREAMS, MAX_FRAME_SIZE, MAX_HEADER_LIST};

/// How the server connections of one kind are set up; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Server {
    builder: h2::server::Builder,
    /// A PING every `.0`, answered within `.1`, or the connection is dropped.
    pings: Option<(Duration, Duration)>,
}

impl Server {
    /// The settings, each chosen (documented in `docs/protocol.md`,
    /// "Connection limits"):
    /// - streams: 1024 concurrent calls per connection (a session's one
    ///   connection carries every client of a client gateway);
    /// - header list: 64 KiB (gRPC implementations default to 8–16 KiB of
    ///   metadata), which also bounds a CONTINUATION flood;
    /// - rapid reset (CVE-2023-44487): at most 64 streams reset by the
    ///   client before the service saw them, and 256 streams this side had
    ///   to reset for errors, before the connection is closed with GOAWAY;
    /// - keep-alive (`ping`, connections over TCP): a PING every 30 s; a
    ///   peer that does not answer within 20 s (dead, or not reading) loses
    ///   the connection. A session's connection is not pinged: its paths'
    ///   heartbeats watch the peer, and a failed session ends it.
    pub(crate) fn new(ping: bool) -> Server {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(FLOW_STREAM_WINDOW)
            .initial_connection_window_size(FLOW_CONN_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_send_buffer_size(FLOW_STREAM_WINDOW as usize)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(64)
            .max_local_error_reset_streams(Some(256));
        let pings = ping.then_some((Duration::from_secs(30), Duration::from_secs(20)));
        Server { builder, pings }
    }

    /// Serves HTTP/2 on `io`, answering each request with `service`'s
    /// response. The returned future ends with the connection.
    pub(crate) fn serve<I, S, F, B>(&self, io: I, service: S) -> Connection<I, S, F, B>
    where
        I: AsyncRead + AsyncWrite + Unpin,
        S: FnMut(Request<RecvBody>) -> F,
        F: Future<Output = Response<B>>,
        B: SendBody,
    {
        Connection {
            state: State::Handshaking(self.builder.handshake(io)),
            service,
            calls: FuturesUnordered::new(),
            pings: self.pings,
            keep_alive: None,
            close_pending: false,
        }
    }
}

/// One served connection: a future that ends when the connection does.
pub(crate) struct Connection<I, S, F, B>
where
    B: SendBody,
{
    state: State<I>,
    service: S,
    /// Calls whose answer is awaited or sent.
    calls: FuturesUnordered<Call<F, B>>,
    pings: Option<(Duration, Duration)>,
    keep_alive: Option<Pin<Box<dyn Future<Output = String> + Send>>>,
    /// Graceful shutdown was asked for during the handshake.
    close_pending: bool,
}

enum State<I> {
    Handshaking(Handshake<I, Bytes>),
    Serving(h2::server::Connection<I, Bytes>),
}

impl<I, S, F, B> Connection<I, S, F, B>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RecvBody>) -> F,
    F: Future<Output = Response<B>>,
    B: SendBody,
{
    /// Sends GOAWAY: calls already open finish, new ones are refused, and
    /// the connection ends once its last call has.
    pub(crate) fn graceful_shutdown(&mut self) {
        match &mut self.state {
            State::Handshaking(_) => self.close_pending = true,
            State::Serving(conn) => conn.graceful_shutdown(),
        }
    }

    /// Runs the calls that were woken, then reads, writes and takes new
    /// calls, until neither has more to do.
    fn poll_serving(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        let State::Serving(conn) = &mut self.state else { unreachable!("only called once serving") };
        loop {
            while let Poll::Ready(Some(())) = self.calls.poll_next_unpin(cx) {}
            let mut took = false;
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        took = true;
                        if let Some(call) = start_call(&mut self.service, req, respond) {
                            self.calls.push(call);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                    // Closed: calls still open have no stream to answer on.
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => break,
                }
            }
            if let Some(watch) = self.keep_alive.as_mut() {
                if let Poll::Ready(why) = watch.as_mut().poll(cx) {
                    return Poll::Ready(Err(why));
                }
            }
            if !took {
                return Poll::Pending;
            }
        }
    }
}

impl<I, S, F, B> Future for Connection<I, S, F, B>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: FnMut(Request<RecvBody>) -> F + Unpin,
    F: Future<Output = Response<B>>,
    B: SendBody,
{
    /// Ok when the connection closed in order; else why it ended.
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let State::Handshaking(handshake) = &mut this.state {
            let mut conn = ready!(Pin::new(handshake).poll(cx)).map_err(|e| format!("HTTP/2 handshake: {e}"))?;
            if this.close_pending {
                conn.graceful_shutdown();
            }
            this.keep_alive = match (this.pings, conn.ping_pong()) {
                (Some((every, within)), Some(pinger)) => Some(Box::pin(keep_alive(pinger, every, within, || true))),
                _ => None,
            };
            this.state = State::Serving(conn);
        }
        this.poll_serving(cx)
    }
}

/// The call for a new request, or `None` if it was answered at once.
fn start_call<S, F, B>(service: &mut S, req: Request<h2::RecvStream>, mut respond: SendResponse<Bytes>) -> Option<Call<F, B>>
where
    S: FnMut(Request<RecvBody>) -> F,
    B: SendBody,
{
    if req.method() == Method::CONNECT {
        // No tunnels: this is a gRPC hop.
        let mut refusal = Response::new(());
        *refusal.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let _ = respond.send_response(refusal, true);
        return None;
    }
    let answer = service(req.map(RecvBody::new));
    Some(Call { answer: Some(answer), respond, pipe: None })
}

pin_project! {
    /// One call: its answer awaited, then its response body sent.
    struct Call<F, B>
    where
        B: SendBody,
    {
        #[pin]
        answer: Option<F>,
        respond: SendResponse<Bytes>,
        pipe: Option<Pipe<B>>,
    }
}

impl<F, B> Future for Call<F, B>
where
    F: Future<Output = Response<B>>,
    B: SendBody,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if let Some(answer) = this.answer.as_mut().as_pin_mut() {
            let Poll::Ready(rsp) = answer.poll(cx) else {
                // The client reset its stream before the answer: give the
                // call up (dropping it ends what it opened upstream).
                if let Poll::Ready(reason) = this.respond.poll_reset(cx) {
                    tracing::debug!("call reset by the client before its answer: {reason:?}");
                    return Poll::Ready(());
                }
                return Poll::Pending;
            };
            this.answer.set(None);
            let (head, body) = rsp.into_parts();
            let end = body.is_end_stream();
            match this.respond.send_response(Response::from_parts(head, ()), end) {
                Ok(stream) if !end => *this.pipe = Some(Pipe::new(stream, body, "response body")),
                Ok(_) => return Poll::Ready(()),
                Err(e) => {
                    tracing::debug!("response not sent: {e}");
                    return Poll::Ready(());
                }
            }
        }
        match this.pipe.as_mut() {
            Some(pipe) => Pin::new(pipe).poll(cx),
            None => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::body::ProxyBody;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::sync::{mpsc, Notify};

    /// An h2 client over an in-memory pipe to `serve`, its connection driven
    /// by a task.
    async fn client_of<F, Fut>(serve: F) -> h2::client::SendRequest<Bytes>
    where
        F: FnMut(Request<RecvBody>) -> Fut + Send + Unpin + 'static,
        Fut: Future<Output = Response<ProxyBody>> + Send + 'static,
    {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        tokio::spawn(Server::new(false).serve(theirs, serve));
        let (tx, conn) = h2::client::handshake(ours).await.unwrap();
        tokio::spawn(conn);
        tx
    }

    fn get(path: &str) -> Request<()> {
        Request::post(format!("http://resi{path}")).body(()).unwrap()
    }

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_call_reset_before_its_answer_is_dropped() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        let mut tx = client_of(move |_req| {
            let guard = DropFlag(flag.clone());
            async move {
                std::future::pending::<()>().await;
                drop(guard);
                Response::new(ProxyBody::default())
            }
        })
        .await;
        let (rsp, mut stream) = tx.send_request(get("/slow"), false).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        stream.send_reset(h2::Reason::CANCEL);
        drop(rsp);
        for _ in 0..100 {
            if dropped.load(Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the call's future outlived its stream's reset");
    }

    #[tokio::test]
    async fn a_body_larger_than_the_windows_arrives_whole_with_its_trailers() {
        // 8 MiB in 64 KiB chunks against the client's default 64 KiB windows.
        let mut tx = client_of(|_req| async {
            let (frames, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                for i in 0..128u8 {
                    frames.send(http_body::Frame::data(Bytes::from(vec![i; 64 << 10]))).await.unwrap();
                }
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                frames.send(http_body::Frame::trailers(trailers)).await.unwrap();
            });
            Response::new(ProxyBody::Frames(rx))
        })
        .await;
        let (rsp, _) = tx.send_request(get("/big"), true).unwrap();
        let mut body = rsp.await.unwrap().into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got.len(), 128 << 16);
        assert!(got.chunks(64 << 10).enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8)), "bytes out of order");
        let trailers = body.trailers().await.unwrap().expect("no trailers");
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn graceful_shutdown_lets_an_open_call_finish_and_refuses_new_ones() {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let answer = Arc::new(Notify::new());
        let release = answer.clone();
        let mut conn = Server::new(false).serve(theirs, move |_req| {
            let release = release.clone();
            async move {
                release.notified().await;
                Response::new(ProxyBody::ok(Bytes::from_static(b"\0\0\0\0\x02hi")))
            }
        });
        let (mut tx, client) = h2::client::handshake(ours).await.unwrap();
        tokio::spawn(client);
        let (rsp, _) = tx.send_request(get("/open"), true).unwrap();
        let server = tokio::spawn(async move {
            tokio::select! {
                _ = &mut conn => panic!("ended before shutdown"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            conn.graceful_shutdown();
            conn.await
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!server.is_finished(), "the connection ended with a call open");
        answer.notify_one();
        let rsp = rsp.await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let mut body = rsp.into_body();
        assert_eq!(body.data().await.unwrap().unwrap(), Bytes::from_static(b"\0\0\0\0\x02hi"));
        assert_eq!(body.trailers().await.unwrap().unwrap()["grpc-status"], "0");
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("no end after the last call").unwrap().unwrap();
        assert!(tx.send_request(get("/late"), true).is_err() || tx.ready().await.is_err());
    }

    #[tokio::test]
    async fn connect_is_refused() {
        let mut tx = client_of(|_req| async {
            assert!(false, "CONNECT reached the service");
            Response::new(ProxyBody::default())
        })
        .await;
        let req = Request::connect("resi:443").body(()).unwrap();
        let (rsp, _) = tx.send_request(req, true).unwrap();
        assert_eq!(rsp.await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
