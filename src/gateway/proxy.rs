//! The per-call service: answer `Modify` for known extensions, forward the
//! rest.
//!
//! Forwarded calls are never buffered: the request and response bodies are
//! the streams' own bodies, passed frame by frame (trailers included), so every
//! RPC shape passes, and dropping the call (client RST_STREAM) drops the
//! upstream stream, which resets it. Every message is counted on the way
//! (`MaxMessageSize`, see [`super::body`]). Only `Modify` is read in full,
//! because the hop must look at the extension id; a `Modify` this hop
//! passes on is re-sent from the buffered bytes.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Either;
use prost::Message;

use super::body::{LimitedRequest, LocalBody, ProxyBody, Refusal, ReqBody, UpstreamBody};
use super::h2stream::RecvBody;
use super::{health, Shared};
use crate::extension::{not_implemented, run_handler_in, CallContext};
use crate::grpc::{self, Code, MessageTooLarge, Status};
use crate::proto::esi::{Extension, ModifyRequest, ModifyResponse};
use crate::proto::{HEALTH_CHECK_PATH, HEALTH_WATCH_PATH, MODIFY_PATH, REVERSE_PATH};

/// Serves one call that arrived on a connection described by `ctx`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<CallContext>,
    req: Request<RecvBody>,
) -> Response<ProxyBody> {
    match req.uri().path() {
        // Boxed: the rare, larger future stays out of every forwarded call.
        MODIFY_PATH => Box::pin(modify(&shared, &ctx, req)).await,
        REVERSE_PATH => reverse(&shared, req, ctx.over_session),
        HEALTH_CHECK_PATH => health::check(&shared, req).await,
        HEALTH_WATCH_PATH => health::watch(shared, req).await,
        _ => {
            let (parts, body) = req.into_parts();
            let (body, refused) = LimitedRequest::new(body, shared.max_message_size);
            forward(&shared, Request::from_parts(parts, Either::Left(body)), refused).await
        }
    }
}

/// A client gateway opens its reverse channel (only over a session this
/// gateway accepted).
fn reverse(shared: &Shared, req: Request<RecvBody>, over_session: bool) -> Response<ProxyBody> {
    let refuse = |why: &str| Status::new(Code::FailedPrecondition, why.to_string()).to_response();
    if !over_session {
        return refuse("a reverse channel can only be opened over a RESI session (by a client gateway)");
    }
    match &shared.reverse {
        Some(channels) => channels.accept(req),
        None => refuse("this gateway takes no reverse channel: it has no [Reverse] Listen"),
    }
}

/// Sends `req` upstream. A request refused before the response headers
/// came back is answered here, trailers-only, with the refusal.
async fn forward(shared: &Shared, req: Request<ReqBody>, mut refused: Refusal) -> Response<ProxyBody> {
    let send = shared.target.send(req);
    tokio::pin!(send);
    let awaiting = crate::busy_poll::Awaiting::start();
    let sent = tokio::select! {
        biased;
        Ok(e) = &mut refused => return refusal(shared, &e),
        sent = &mut send => sent,
    };
    drop(awaiting);
    match sent {
        Ok((rsp, session)) => {
            // Trailers-only: the status is in the headers; else it comes at the end.
            let done = Status::from_headers(rsp.headers());
            let tally = shared.calls.clone();
            rsp.map(|body| {
                let body = UpstreamBody::new(body, shared.max_message_size, refused, session);
                match done {
                    Some(st) => {
                        tally.record(st.code);
                        ProxyBody::Upstream(body)
                    }
                    None => ProxyBody::Upstream(body.counted(tally)),
                }
            })
        }
        Err(st) => {
            // A request refused while it was being sent fails the send too
            // (its stream is reset): the refusal is the reason to give.
            if let Some(Ok(e)) = futures_util::FutureExt::now_or_never(&mut refused) {
                return refusal(shared, &e);
            }
            tracing::debug!("call not forwarded: {st}");
            shared.calls.record(st.code);
            st.to_response()
        }
    }
}

/// The answer to a call whose request was refused on its way upstream.
fn refusal(shared: &Shared, e: &MessageTooLarge) -> Response<ProxyBody> {
    let st = e.status("request");
    shared.calls.record(st.code);
    st.to_response()
}

async fn modify(shared: &Shared, ctx: &CallContext, req: Request<RecvBody>) -> Response<ProxyBody> {
    let (parts, body) = req.into_parts();
    let msg = match read_unary(body, shared.max_message_size).await {
        Ok(msg) => msg,
        Err(st) => return st.to_response(),
    };
    let ext = match decode_modify(msg.clone()) {
        Ok(ext) => ext,
        Err(st) => return st.to_response(),
    };
    let (id, pass) = (ext.id, ext.pass);
    match shared.extensions.get(id) {
        Some(handler) => match run_handler_in(handler, ext, ctx).await {
            Ok(data) => modify_response(Extension { id, pass, data }),
            Err(st) => st.to_response(),
        },
        None if pass => {
            let body = Either::Right(LocalBody::full(grpc::frame_bytes(&msg)));
            forward(shared, Request::from_parts(parts, body), Refusal::terminated()).await
        }
        None => not_implemented(id).to_response(),
    }
}

/// Reads the one message of a unary request body, refusing one over
/// `max_message` bytes (at its prefix), a second one, or a cut one.
pub(super) async fn read_unary(body: RecvBody, max_message: usize) -> Result<Bytes, Status> {
    let (message, _) = grpc::read_single(body, max_message, grpc::Side::Request).await?;
    message.ok_or_else(|| Status::new(Code::InvalidArgument, "the request holds no gRPC message"))
}

fn decode_modify(msg: Bytes) -> Result<Extension, Status> {
    let req = ModifyRequest::decode(msg)
        .map_err(|e| Status::new(Code::InvalidArgument, format!("bad ModifyRequest: {e}")))?;
    req.ext.ok_or_else(|| Status::new(Code::InvalidArgument, "ModifyRequest without ext: nothing to modify"))
}

fn modify_response(ext: Extension) -> Response<ProxyBody> {
    let frame = grpc::encode_frame(&ModifyResponse { ext: Some(ext) });
    let mut rsp = Response::new(ProxyBody::ok(frame));
    rsp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(grpc::CONTENT_TYPE));
    rsp
}
