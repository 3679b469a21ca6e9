//! Body types of forwarded and locally answered calls.
//!
//! Requests go upstream either as the client's own body (streamed frame by
//! frame, trailers included) or as a [`LocalBody`]: bytes this hop buffered
//! (a `Modify` it inspected and passes on) or messages an in-process
//! [`crate::client::Client`] feeds through a channel. Responses come back
//! either from upstream or from this hop (a handled `Modify`, or a status it
//! generated).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::upstream::CallSession;
use crate::grpc::{frame_bytes, status_trailers, Code, Status};

/// The body of a request sent upstream. A client body that fails (the client
/// reset its stream) fails the upstream stream too: that is how
/// cancellation travels.
pub type ReqBody = Either<Incoming, LocalBody>;

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
    /// Passed through from upstream: data frames and trailers untouched.
    /// The session it came over decides the status should the body break.
    Upstream(Incoming, CallSession),
    /// Made by this hop: at most one data frame, then trailers.
    Local { data: Option<Bytes>, trailers: Option<HeaderMap> },
    /// Raw bytes made by this hop as they come, no trailers: the reverse
    /// channel's response body; it ends when the sender is dropped.
    Raw(mpsc::Receiver<Bytes>),
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
        match this {
            ProxyBody::Upstream(body, session) => match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
                None => Poll::Ready(None),
                Some(Err(e)) => {
                    // The upstream stream broke mid-response: end the call
                    // with a status instead of resetting it, so the client
                    // learns why (DATA_LOSS if the copies disagreed).
                    tracing::debug!("upstream response body failed: {e}");
                    let st = session.failure(Status::new(Code::Unavailable, format!("upstream stream failed: {e}")));
                    *this = ProxyBody::default();
                    Poll::Ready(Some(Ok(Frame::trailers(status_trailers(&st)))))
                }
            },
            ProxyBody::Local { data, trailers } => {
                if let Some(d) = data.take() {
                    Poll::Ready(Some(Ok(Frame::data(d))))
                } else {
                    Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
                }
            }
            ProxyBody::Raw(rx) => rx.poll_recv(cx).map(|d| d.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b, _) => b.is_end_stream(),
            ProxyBody::Local { data, trailers } => data.is_none() && trailers.is_none(),
            ProxyBody::Raw(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b, _) => b.size_hint(),
            // Not exact on purpose: hyper would add a content-length, which
            // gRPC responses do not carry.
            ProxyBody::Local { .. } | ProxyBody::Raw(_) => SizeHint::default(),
        }
    }
}
