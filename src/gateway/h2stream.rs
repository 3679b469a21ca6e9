//! The two halves of an HTTP/2 stream as `http_body` bodies, on `h2`
//! directly, shared by the gateway's client ([`super::h2client`]) and
//! server ([`super::h2server`]) sides.
//!
//! [`RecvBody`] reads a stream's DATA (releasing its flow-control window
//! as each chunk is taken) and then its trailers. [`Pipe`] sends a body
//! into a stream with hyper's back-pressure rule: wait for stream capacity
//! before taking the next chunk, so a slow reader holds the body back
//! instead of a buffer growing in this hop.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http_body::{Body, Frame, SizeHint};

/// What a body's error must be to end its stream with a reason.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// A body one side of a stream sends: `Bytes` chunks, an error that boxes,
/// and no pinning needed (the pipe and the server's calls hold it inline).
pub(crate) trait SendBody: Body<Data = Bytes, Error: Into<BoxError>> + Unpin {}

impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin> SendBody for B {}

/// A received stream's body: DATA (its flow-control window released as it
/// is read), then trailers.
///
/// It looks one event ahead after each chunk: a gRPC client sends a
/// request's END_STREAM as an empty DATA frame right behind the message,
/// and seeing it at once lets [`Body::is_end_stream`] say so, so the hop
/// sends the message on with END_STREAM in one frame rather than two
/// (over a session, one frame fewer on every path).
#[derive(Debug)]
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// The event after the chunk last returned, if it was already there.
    next: Option<Result<Bytes, h2::Error>>,
}

impl RecvBody {
    pub(crate) fn new(recv: RecvStream) -> RecvBody {
        RecvBody { recv, data_done: false, next: None }
    }

    /// Takes the next DATA event if it is already there (empty chunks
    /// skipped), without waiting.
    fn look_ahead(&mut self, cx: &mut Context<'_>) {
        loop {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) if data.is_empty() => continue,
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.next = Some(Ok(data));
                }
                Poll::Ready(Some(Err(e))) => self.next = Some(Err(e)),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => {}
            }
            return;
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.data_done {
            let event = match this.next.take() {
                Some(event) => Some(event),
                None => ready!(this.recv.poll_data(cx)).inspect(|event| {
                    if let Ok(data) = event {
                        let _ = this.recv.flow_control().release_capacity(data.len());
                    }
                }),
            };
            match event {
                Some(Ok(data)) => {
                    this.look_ahead(cx);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none() && self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body on its way into its stream; done when the body was sent whole,
/// or the stream ended.
pub(crate) struct Pipe<B>
where
    B: SendBody,
{
    stream: SendStream<Bytes>,
    body: B,
    /// A chunk taken from the body that waits for stream capacity.
    held: Option<Bytes>,
    /// The body was sent whole, or the stream has ended.
    done: bool,
    /// Which body this is, for the log.
    what: &'static str,
}

impl<B> Pipe<B>
where
    B: SendBody,
{
    pub(crate) fn new(stream: SendStream<Bytes>, body: B, what: &'static str) -> Pipe<B> {
        Pipe { stream, body, held: None, done: false, what }
    }

    /// Why the body's source stopped, if it says (looked at without
    /// waiting: a few frames already received, then its error).
    fn abandoned_reason(&mut self) -> Reason {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..16 {
            match Pin::new(&mut self.body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    return reason_of(&*e);
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        Reason::INTERNAL_ERROR
    }

    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        loop {
            // The peer reset the stream: stop reading the body (dropping it
            // resets its source in turn).
            if let Poll::Ready(reason) = self.stream.poll_reset(cx) {
                return Poll::Ready(Err(match reason {
                    Ok(reason) => format!("stream reset by the peer: {reason:?}"),
                    Err(e) => e.to_string(),
                }));
            }
            if let Some(chunk) = self.held.take() {
                if let Err(e) = ready!(self.wait_capacity(cx, chunk)) {
                    return Poll::Ready(Err(e));
                }
                continue;
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => return Poll::Ready(self.stream.send_data(Bytes::new(), true).map_err(|e| e.to_string())),
                Some(Err(e)) => {
                    let e: BoxError = e.into();
                    self.stream.send_reset(reason_of(&*e));
                    return Poll::Ready(Err(e.to_string()));
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(chunk) => {
                    let end = self.body.is_end_stream();
                    // The last chunk (or an empty one) goes at once: h2
                    // queues it until the window allows, and nothing more
                    // is read that back-pressure would hold back.
                    if end || chunk.is_empty() {
                        self.stream.send_data(chunk, end).map_err(|e| e.to_string())?;
                        if end {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    // Claim one byte, not the chunk: h2 raises the claim to
                    // what is queued, and a small claim cannot pin the
                    // connection's window against other streams.
                    self.stream.reserve_capacity(1);
                    self.held = Some(chunk);
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.stream.reserve_capacity(0);
                        return Poll::Ready(self.stream.send_trailers(trailers).map_err(|e| e.to_string()));
                    }
                }
            }
        }
    }

    /// Sends `chunk` once the stream has capacity (held again meanwhile).
    fn wait_capacity(&mut self, cx: &mut Context<'_>, chunk: Bytes) -> Poll<Result<(), String>> {
        while self.stream.capacity() == 0 {
            match self.stream.poll_capacity(cx) {
                Poll::Pending => {
                    self.held = Some(chunk);
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(0))) => {}
                Poll::Ready(Some(Ok(_))) => break,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                Poll::Ready(None) => return Poll::Ready(Err("the stream no longer takes data".into())),
            }
        }
        Poll::Ready(self.stream.send_data(chunk, false).map_err(|e| e.to_string()))
    }
}

impl<B> Drop for Pipe<B>
where
    B: SendBody,
{
    /// A pipe dropped with its body still open (the caller reset its
    /// stream, or the call was given up) resets its stream: with the
    /// caller's reason if its body has one, else INTERNAL_ERROR. Not the
    /// CANCEL that h2 would send for a dropped stream: a tonic server may
    /// read a request stream reset with CANCEL as one that ended normally.
    fn drop(&mut self) {
        if !self.done {
            let reason = self.abandoned_reason();
            self.stream.send_reset(reason);
        }
    }
}

impl<B> Future for Pipe<B>
where
    B: SendBody,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let pumped = ready!(this.pump(cx));
        this.done = true;
        if let Err(why) = pumped {
            tracing::debug!("{}: {why}", this.what);
        }
        Poll::Ready(())
    }
}

/// The reset to send for a body that failed: its source's own reset (e.g.
/// the caller's CANCEL) if that is why, else INTERNAL_ERROR.
pub(crate) fn reason_of(e: &(dyn StdError + 'static)) -> Reason {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(reason) = err.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        next = err.source();
    }
    Reason::INTERNAL_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The server's side of one request whose body `send` writes.
    async fn received(send: impl FnOnce(&mut SendStream<Bytes>) + Send + 'static) -> RecvBody {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let (mut tx, conn) = h2::client::handshake(ours).await.unwrap();
            tokio::spawn(conn);
            let (_rsp, mut stream) = tx.send_request(http::Request::post("http://resi/x").body(()).unwrap(), false).unwrap();
            send(&mut stream);
            std::future::pending::<()>().await;
        });
        let mut conn = h2::server::handshake(theirs).await.unwrap();
        let (req, _respond) = conn.accept().await.unwrap().unwrap();
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        RecvBody::new(req.into_body())
    }

    #[tokio::test]
    async fn an_end_stream_right_behind_the_message_is_seen_with_it() {
        let mut body = received(|s| {
            s.send_data(Bytes::from_static(b"message"), false).unwrap();
            s.send_data(Bytes::new(), true).unwrap();
        })
        .await;
        // Let both frames arrive before the first read.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"message"));
        assert!(body.is_end_stream(), "the END_STREAM behind the message was not seen");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_chunk_looked_ahead_at_is_returned_next_in_order() {
        let mut body = received(|s| {
            s.send_data(Bytes::from_static(b"one"), false).unwrap();
            s.send_data(Bytes::from_static(b"two"), false).unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            s.send_trailers(trailers).unwrap();
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "one");
        assert!(!body.is_end_stream());
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "two");
        assert!(!body.is_end_stream(), "trailers are still to come");
        let trailers = body.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert!(body.frame().await.is_none());
    }
}
