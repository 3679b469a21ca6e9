//! `Modify` dispatch and the extension registry.
//!
//! Every hop of the extensible ESI answers `/esi.Esi/Modify` for the
//! extension ids it knows and forwards (or refuses) the rest. The registry is
//! shared by all connections of a gateway and can change at run time: the
//! Python API registers handlers written in Python after the gateway started.
//! Lookups hold a lock only long enough to clone an `Arc`; handlers run
//! without it.
//!
//! Built in: id 1 ([`REDUNDANCY_EXTENSION_ID`]) opens redundant sessions
//! through the [`SessionRegistry`]; id 2 ([`HOP_INFO_EXTENSION_ID`]) answers
//! with this hop's name and version.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures_util::FutureExt;
use prost::Message;

use crate::grpc::{Code, Status};
use crate::proto::esi::Extension;
use crate::proto::resi::{self, redundancy};
use crate::proto::{HOP_INFO_EXTENSION_ID, REDUNDANCY_EXTENSION_ID};
use crate::session::registry::SessionRegistry;
use crate::tls::CertFingerprint;

/// What a handler returns: the `data` of the answering extension.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, Status>> + Send + 'static>>;

/// Answers `Modify` calls for one extension id.
///
/// Object safe so handlers from other languages can be registered as
/// `Arc<dyn ExtensionHandler>`; a plain async closure becomes one with
/// [`handler_fn`].
pub trait ExtensionHandler: Send + Sync + 'static {
    /// Handles the request's extension; `Ok(data)` becomes the response's
    /// `ext.data`, `Err(status)` is returned to the caller as is.
    fn handle(&self, ext: Extension) -> HandlerFuture;

    /// Like [`ExtensionHandler::handle`], knowing the connection the call
    /// arrived on; the default ignores it. (The redundancy extension limits
    /// Opens per peer address and binds sessions to client certificates.)
    fn handle_in(&self, ext: Extension, ctx: &CallContext) -> HandlerFuture {
        let _ = ctx;
        self.handle(ext)
    }
}

/// What a hop knows about the connection a `Modify` arrived on.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The address of the peer the call came from over TCP (None on a
    /// session's HTTP/2, or not over a socket).
    pub peer: Option<SocketAddr>,
    /// SHA-256 of the client certificate the caller presented (mutual TLS).
    pub peer_certificate: Option<CertFingerprint>,
    /// The call arrived on the HTTP/2 connection of a session this gateway
    /// accepted (only there may a client gateway open a reverse channel).
    pub over_session: bool,
}

impl CallContext {
    /// A call on the HTTP/2 connection of an accepted session.
    pub fn over_session() -> CallContext {
        CallContext { over_session: true, ..CallContext::default() }
    }
}

/// A handler made from an async closure.
pub struct FnHandler<F>(F);

impl<F, Fut> ExtensionHandler for FnHandler<F>
where
    F: Fn(Extension) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
{
    fn handle(&self, ext: Extension) -> HandlerFuture {
        Box::pin((self.0)(ext))
    }
}

/// Wraps an async closure as a registrable handler.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn ExtensionHandler>
where
    F: Fn(Extension) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

/// The extensions this hop answers itself, by id.
#[derive(Default)]
pub struct ExtensionRegistry {
    handlers: RwLock<HashMap<u32, Arc<dyn ExtensionHandler>>>,
}

impl ExtensionRegistry {
    /// An empty registry (no built-ins).
    pub fn new() -> ExtensionRegistry {
        ExtensionRegistry::default()
    }

    /// A registry with the built-in extensions of a gateway.
    pub fn with_builtins(sessions: Arc<SessionRegistry>, hop_name: String) -> ExtensionRegistry {
        let reg = ExtensionRegistry::new();
        reg.register(REDUNDANCY_EXTENSION_ID, Arc::new(RedundancyHandler { sessions }));
        reg.register(HOP_INFO_EXTENSION_ID, Arc::new(HopInfoHandler { name: hop_name }));
        reg
    }

    /// Adds (or replaces) the handler for `id`; returns the one it replaced.
    pub fn register(&self, id: u32, handler: Arc<dyn ExtensionHandler>) -> Option<Arc<dyn ExtensionHandler>> {
        self.write().insert(id, handler)
    }

    /// Removes the handler for `id`; calls for it are then forwarded or
    /// refused according to their `pass` bit.
    pub fn unregister(&self, id: u32) -> Option<Arc<dyn ExtensionHandler>> {
        self.write().remove(&id)
    }

    /// The handler for `id`, if this hop knows it.
    pub fn get(&self, id: u32) -> Option<Arc<dyn ExtensionHandler>> {
        self.handlers.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// Whether this hop knows `id`.
    pub fn contains(&self, id: u32) -> bool {
        self.handlers.read().unwrap_or_else(|e| e.into_inner()).contains_key(&id)
    }

    /// Registered ids, sorted.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.handlers.read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Arc<dyn ExtensionHandler>>> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `handler` on `ext` from an unknown peer (see [`run_handler_in`]).
pub async fn run_handler(handler: Arc<dyn ExtensionHandler>, ext: Extension) -> Result<Bytes, Status> {
    run_handler_in(handler, ext, &CallContext::default()).await
}

/// Runs `handler` on `ext`, a call that arrived with `ctx`. A panicking
/// handler is reported as `INTERNAL` and harms nothing else; the handler
/// runs inline (not spawned), so a cancelled call cancels it.
pub async fn run_handler_in(handler: Arc<dyn ExtensionHandler>, ext: Extension, ctx: &CallContext) -> Result<Bytes, Status> {
    let id = ext.id;
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle_in(ext, ctx))) {
        Ok(fut) => fut,
        Err(p) => return Err(panicked(id, p)),
    };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(p) => Err(panicked(id, p)),
    }
}

fn panicked(id: u32, payload: Box<dyn std::any::Any + Send>) -> Status {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    tracing::error!(extension = id, "extension handler panicked: {what}");
    Status::new(Code::Internal, format!("extension {id} handler failed: {what}"))
}

/// The message a hop returns for an unknown extension with `pass == false`.
pub fn not_implemented(id: u32) -> Status {
    Status::new(Code::Unimplemented, format!("extension {id} is not implemented at this hop (pass=false)"))
}

/// Extension 1: opens sessions. Merges travel on the path itself (HELLO
/// frames), never over HTTP/2.
struct RedundancyHandler {
    sessions: Arc<SessionRegistry>,
}

impl ExtensionHandler for RedundancyHandler {
    fn handle(&self, ext: Extension) -> HandlerFuture {
        self.handle_in(ext, &CallContext::default())
    }

    /// A session opened over mutual TLS belongs to the caller's certificate.
    fn handle_in(&self, ext: Extension, ctx: &CallContext) -> HandlerFuture {
        let result = self.open(&ext.data, ctx);
        Box::pin(std::future::ready(result))
    }
}

impl RedundancyHandler {
    fn open(&self, data: &[u8], ctx: &CallContext) -> Result<Bytes, Status> {
        let msg = resi::Redundancy::decode(data)
            .map_err(|e| Status::new(Code::InvalidArgument, format!("extension 1: bad Redundancy message: {e}")))?;
        match msg.msg {
            Some(redundancy::Msg::Open(req)) => {
                let opened = self.sessions.open_for(&req, ctx.peer_certificate, ctx.peer.map(|a| a.ip()))?;
                let rsp = resi::Redundancy { msg: Some(redundancy::Msg::Opened(opened)) };
                Ok(rsp.encode_to_vec().into())
            }
            Some(redundancy::Msg::Merge(_)) => Err(Status::new(
                Code::InvalidArgument,
                "extension 1: merge requests go in the HELLO frame of a RESI path, not over HTTP/2",
            )),
            _ => Err(Status::new(
                Code::InvalidArgument,
                "extension 1: expected Redundancy.open (merges go in the HELLO frame of a RESI path)",
            )),
        }
    }
}

/// Extension 2: tells which hop answered.
struct HopInfoHandler {
    name: String,
}

impl ExtensionHandler for HopInfoHandler {
    fn handle(&self, _ext: Extension) -> HandlerFuture {
        let info = resi::HopInfo { name: self.name.clone(), version: env!("CARGO_PKG_VERSION").into() };
        Box::pin(std::future::ready(Ok(info.encode_to_vec().into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(id: u32) -> Extension {
        Extension { id, pass: false, data: Bytes::from_static(b"x") }
    }

    #[tokio::test]
    async fn register_run_unregister() {
        let reg = ExtensionRegistry::new();
        reg.register(9, handler_fn(|e: Extension| async move { Ok(e.data) }));
        assert!(reg.contains(9));
        let h = reg.get(9).unwrap();
        assert_eq!(run_handler(h, ext(9)).await.unwrap(), Bytes::from_static(b"x"));
        reg.unregister(9);
        assert!(reg.get(9).is_none());
    }

    #[tokio::test]
    async fn panics_become_internal() {
        let h = handler_fn(|_e: Extension| async move {
            if true {
                panic!("boom");
            }
            Ok(Bytes::new())
        });
        let st = run_handler(h, ext(5)).await.unwrap_err();
        assert_eq!(st.code, Code::Internal);
        assert!(st.message.contains("boom"), "{}", st.message);
    }

    #[test]
    fn not_implemented_names_id() {
        assert!(not_implemented(77).message.contains("77"));
    }
}
