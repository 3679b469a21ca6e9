//! Body types of forwarded and locally answered calls.
//!
//! Requests go upstream either as the client's own body (streamed frame by
//! frame, trailers included) or as a [`LocalBody`]: bytes this hop buffered
//! (a `Modify` it inspected and passes on) or messages an in-process
//! [`crate::client::Client`] feeds through a channel. Responses come back
//! either from upstream or from this hop (a handled `Modify`, or a status it
//! generated).
//!
//! Forwarded bodies are counted, never buffered, by a
//! [`MessageTracker`] each way, enforcing `[Resi] MaxMessageSize` on every
//! message: an oversized request message fails the upstream request body
//! (its pipe then resets the upstream stream, INTERNAL_ERROR) and tells the
//! response side, which answers the client `RESOURCE_EXHAUSTED`; an
//! oversized response message ends the client's response with
//! `RESOURCE_EXHAUSTED` trailers and drops (resets) the upstream stream.
//! Only that call is affected.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use std::future::Future;

use bytes::Bytes;
use futures_util::future::{Fuse, FusedFuture, FutureExt};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use super::h2stream::RecvBody;
use tokio::sync::{mpsc, oneshot};

use super::h2client::ResponseBody;
use super::metrics::CallCounts;
use super::upstream::CallSession;
use crate::grpc::{frame_bytes, status_trailers, Code, MessageTooLarge, MessageTracker, Status};

/// The body of a request sent upstream. A client body that fails (the client
/// reset its stream, or sent a message over the limit) fails the upstream
/// stream too: that is how cancellation travels.
pub type ReqBody = Either<LimitedRequest, LocalBody>;

/// Tells the response side of a call that its request was refused.
pub type Refusal = Fuse<oneshot::Receiver<MessageTooLarge>>;

/// A client's request body on its way upstream, its messages counted.
#[derive(Debug)]
pub struct LimitedRequest {
    body: RecvBody,
    tracker: MessageTracker,
    refused: Option<oneshot::Sender<MessageTooLarge>>,
    failed: bool,
}

impl LimitedRequest {
    /// Wraps `body`; the returned [`Refusal`] fires if a message exceeds
    /// `max` bytes (and is closed without firing if the body ends well).
    pub fn new(body: RecvBody, max: usize) -> (LimitedRequest, Refusal) {
        let (tx, rx) = oneshot::channel();
        let body = LimitedRequest { body, tracker: MessageTracker::new(max), refused: Some(tx), failed: false };
        (body, rx.fuse())
    }
}

impl Body for LimitedRequest {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => {
                this.refused = None;
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            if let Err(refused) = this.tracker.feed(data) {
                this.failed = true;
                tracing::info!("request refused: {}", refused.error);
                if let Some(tx) = this.refused.take() {
                    let _ = tx.send(refused.error);
                }
                // The pipe resets the upstream stream with the reason found in
                // the error. Not CANCEL: a tonic server may read a request
                // stream reset with CANCEL as one that ended normally.
                return Poll::Ready(Some(Err(Box::new(h2::Error::from(h2::Reason::INTERNAL_ERROR)))));
            }
            crate::busy_poll::relayed();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An upstream response on its way to the client, its messages counted,
/// ended early with a status if its request was refused.
#[derive(Debug)]
pub struct UpstreamBody {
    body: ResponseBody,
    tracker: MessageTracker,
    refused: Refusal,
    /// The session it came over decides the status should the body break.
    session: CallSession,
    /// Where the call's final status is counted (taken when counted).
    tally: Option<Arc<CallCounts>>,
}

impl UpstreamBody {
    pub(crate) fn new(body: ResponseBody, max: usize, refused: Refusal, session: CallSession) -> UpstreamBody {
        UpstreamBody { body, tracker: MessageTracker::new(max), refused, session, tally: None }
    }

    /// Counts the call's final status in `tally` when the body ends.
    pub fn counted(mut self, tally: Arc<CallCounts>) -> UpstreamBody {
        self.tally = Some(tally);
        self
    }

    fn settle(&mut self, code: Code) {
        if let Some(t) = self.tally.take() {
            t.record(code);
        }
    }
}

/// A request body made in this process.
#[derive(Debug)]
pub enum LocalBody {
    /// Bytes already framed, sent as one data frame.
    Full(Option<Bytes>),
    /// Messages as they come (framed here on the way out); the stream ends
    /// when the sender is dropped.
    Messages(mpsc::Receiver<Bytes>),
    /// Raw bytes as they come, sent as they are (no gRPC framing): the
    /// reverse channel's request body.
    Raw(mpsc::Receiver<Bytes>),
}

impl LocalBody {
    pub fn full(data: Bytes) -> LocalBody {
        LocalBody::Full(Some(data))
    }
}

impl Body for LocalBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            LocalBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            LocalBody::Messages(rx) => rx.poll_recv(cx).map(|m| m.map(|d| Ok(Frame::data(frame_bytes(&d))))),
            LocalBody::Raw(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, LocalBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            LocalBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            LocalBody::Full(None) => SizeHint::with_exact(0),
            LocalBody::Messages(_) | LocalBody::Raw(_) => SizeHint::default(),
        }
    }
}

/// The body of a response sent to the client.
#[derive(Debug)]
pub enum ProxyBody {
    /// Passed through from upstream: data frames and trailers untouched
    /// (unless a message exceeds the limit).
    Upstream(UpstreamBody),
    /// Made by this hop: at most one data frame, then trailers.
    Local { data: Option<Bytes>, trailers: Option<HeaderMap> },
    /// Raw bytes made by this hop as they come, no trailers: the reverse
    /// channel's response body; it ends when the sender is dropped.
    Raw(mpsc::Receiver<Bytes>),
    /// Frames made by this hop as they come (data, then trailers): a
    /// streaming answer of the gateway's own (health `Watch`).
    Frames(mpsc::Receiver<Frame<Bytes>>),
}

impl Default for ProxyBody {
    fn default() -> Self {
        ProxyBody::Local { data: None, trailers: None }
    }
}

impl ProxyBody {
    /// One message frame and an OK status.
    pub fn ok(data: Bytes) -> ProxyBody {
        ProxyBody::Local { data: Some(data), trailers: Some(status_trailers(&Status::new(Code::Ok, ""))) }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let up = match this {
            ProxyBody::Upstream(up) => up,
            ProxyBody::Raw(rx) => return rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
            ProxyBody::Frames(rx) => return rx.poll_recv(cx).map(|f| f.map(Ok)),
            ProxyBody::Local { .. } => return this.poll_local(),
        };
        if !up.refused.is_terminated() {
            if let Poll::Ready(Ok(e)) = Pin::new(&mut up.refused).poll(cx) {
                let st = e.status("request");
                up.settle(st.code);
                return this.end_with(&st);
            }
        }
        let frame = match ready!(Pin::new(&mut up.body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            None => {
                up.settle(Code::Unknown); // ended without a status
                return Poll::Ready(None);
            }
            Some(Err(e)) => {
                // The upstream stream broke mid-response: end the call with
                // a status instead of resetting it, so the client learns why
                // (DATA_LOSS if the session's copies disagreed).
                tracing::debug!("upstream response body failed: {e}");
                let st = up.session.failure(Status::new(Code::Unavailable, format!("upstream stream failed: {e}")));
                up.settle(st.code);
                return this.end_with(&st);
            }
        };
        let Some(data) = frame.data_ref() else {
            if let Some(trailers) = frame.trailers_ref() {
                up.settle(Status::from_headers(trailers).map_or(Code::Unknown, |st| st.code));
            }
            return Poll::Ready(Some(Ok(frame)));
        };
        match up.tracker.feed(data) {
            Ok(()) => {
                crate::busy_poll::relayed();
                Poll::Ready(Some(Ok(frame)))
            }
            Err(refused) => {
                tracing::info!("response cut: {}", refused.error);
                up.settle(refused.error.status("response").code);
                // The whole messages before the refused one still go out.
                let before = data.slice(..refused.valid);
                let trailers = status_trailers(&refused.error.status("response"));
                *this = ProxyBody::Local { data: (!before.is_empty()).then_some(before), trailers: Some(trailers) };
                this.poll_local()
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(up) => up.body.is_end_stream(),
            ProxyBody::Local { data, trailers } => data.is_none() && trailers.is_none(),
            ProxyBody::Raw(_) | ProxyBody::Frames(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(up) => up.body.size_hint(),
            // Not exact: nothing here needs it (a gRPC response carries
            // no content-length).
            ProxyBody::Local { .. } | ProxyBody::Raw(_) | ProxyBody::Frames(_) => SizeHint::default(),
        }
    }
}

impl ProxyBody {
    fn poll_local(&mut self) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let ProxyBody::Local { data, trailers } = self else { unreachable!("only called on a local body") };
        if let Some(d) = data.take() {
            Poll::Ready(Some(Ok(Frame::data(d))))
        } else {
            Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
        }
    }

    /// Drops the upstream body (resetting its stream) and ends this body
    /// with trailers carrying `status`.
    fn end_with(&mut self, status: &Status) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        *self = ProxyBody::Local { data: None, trailers: Some(status_trailers(status)) };
        self.poll_local()
    }
}
