//! The standard gRPC health checking service (`grpc.health.v1.Health`),
//! answered by the gateway itself.
//!
//! Load balancers, orchestrators and `grpc_health_probe` ask a gRPC server
//! whether it can take calls. A gateway that forwarded these calls would
//! report its upstream's view, or nothing when the upstream has no health
//! service; what an operator needs to know is whether calls *through this
//! gateway* can work. So the gateway answers: `SERVING` while its upstream
//! is connected (for a resi upstream: its session has a live path; for a
//! reverse listener: a reverse channel is open), `NOT_SERVING` otherwise.
//! The overall service `""` and every ESI service name report the same
//! status; other names are `NOT_FOUND` (`Check`) or `SERVICE_UNKNOWN`
//! (`Watch`), as the protocol says.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use prost::Message;
use tokio::sync::mpsc;

use super::body::ProxyBody;
use super::h2stream::RecvBody;
use super::proxy::read_unary;
use super::{Shared, Target};
use crate::grpc::{self, Code, Status};
use crate::proto::health::health_check_response::ServingStatus;
use crate::proto::health::{HealthCheckRequest, HealthCheckResponse};

/// Service names a gateway reports on: the whole server, the extensible
/// ESI, and the SolarNetwork ESI dialect's services.
pub const SERVICES: &[&str] = &[
    "",
    "esi.Esi",
    "solarnetwork.esi.service.DerFacilityExchange",
    "solarnetwork.esi.service.DerFacilityExchangeRegistry",
    "solarnetwork.esi.service.DerFacilityService",
];

/// How often a `Watch` looks at the upstream again: status changes reach
/// watchers within this.
const WATCH_POLL: Duration = Duration::from_millis(250);

/// Whether calls through this listener can work now.
pub(crate) async fn serving(shared: &Shared) -> bool {
    match &shared.target {
        Target::Upstream(up) => up.usable().await,
        Target::Reverse(channels) => channels.count() > 0,
    }
}

fn status_of(up: bool) -> ServingStatus {
    if up {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Reads the request's service name (a malformed request is refused).
async fn service_name(req: Request<RecvBody>, max_message: usize) -> Result<String, Status> {
    let msg = read_unary(req.into_body(), max_message).await?;
    let req = HealthCheckRequest::decode(msg)
        .map_err(|e| Status::new(Code::InvalidArgument, format!("bad HealthCheckRequest: {e}")))?;
    Ok(req.service)
}

fn message(status: ServingStatus) -> Bytes {
    grpc::encode_frame(&HealthCheckResponse { status: status as i32 })
}

fn grpc_response(body: ProxyBody) -> Response<ProxyBody> {
    let mut rsp = Response::new(body);
    rsp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(grpc::CONTENT_TYPE));
    rsp
}

/// `Check`: one answer.
pub(crate) async fn check(shared: &Shared, req: Request<RecvBody>) -> Response<ProxyBody> {
    let service = match service_name(req, shared.max_message_size).await {
        Ok(s) => s,
        Err(st) => return st.to_response(),
    };
    if !SERVICES.contains(&service.as_str()) {
        return Status::new(Code::NotFound, format!("unknown service {service:?}")).to_response();
    }
    grpc_response(ProxyBody::ok(message(status_of(serving(shared).await))))
}

/// `Watch`: the status now, then every change, until the client goes away
/// or the gateway shuts down (then `NOT_SERVING` and `UNAVAILABLE`).
pub(crate) async fn watch(shared: std::sync::Arc<Shared>, req: Request<RecvBody>) -> Response<ProxyBody> {
    let service = match service_name(req, shared.max_message_size).await {
        Ok(s) => s,
        Err(st) => return st.to_response(),
    };
    let (tx, rx) = mpsc::channel(4);
    if SERVICES.contains(&service.as_str()) {
        tokio::spawn(watch_loop(shared, tx));
    } else {
        // The protocol's answer for a name this server does not know:
        // SERVICE_UNKNOWN on the stream, not a failed call.
        let _ = tx.try_send(Frame::data(message(ServingStatus::ServiceUnknown)));
        let _ = tx.try_send(Frame::trailers(grpc::status_trailers(&Status::new(Code::Ok, ""))));
    }
    grpc_response(ProxyBody::Frames(rx))
}

async fn watch_loop(shared: std::sync::Arc<Shared>, tx: mpsc::Sender<Frame<Bytes>>) {
    let mut last = None;
    loop {
        let now = status_of(serving(&shared).await);
        if last != Some(now) {
            if tx.send(Frame::data(message(now))).await.is_err() {
                return; // the client went away
            }
            last = Some(now);
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = shared.closing.cancelled() => break,
            _ = tokio::time::sleep(WATCH_POLL) => {}
        }
    }
    let _ = tx.send(Frame::data(message(ServingStatus::NotServing))).await;
    let bye = Status::new(Code::Unavailable, "gateway is shutting down");
    let _ = tx.send(Frame::trailers(grpc::status_trailers(&bye))).await;
}
