//! Transports that carry path frames.
//!
//! A transport only has to connect to the peer, carry one HELLO and its
//! HELLO_REPLY, and then hand the session either a byte stream
//! ([`crate::session::driver::StreamPath`], e.g. TCP) or a message channel
//! ([`crate::session::driver::MessagePath`], e.g. NKN). Dialling is behind
//! [`PathDialer`] so the session's redial logic is the same for all.

pub mod nkn;
pub mod tcp;

use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::session::driver::NewPath;
use crate::tls::{ChannelBinding, UpstreamTls};

pub use tcp::PathError;

/// Builds a path's HELLO once its connection is up, from what the
/// connection tells about itself (an empty binding on transports without
/// TLS), so a merge can be bound to the connection that carries it.
pub type HelloFn = Box<dyn FnOnce(&ChannelBinding) -> Bytes + Send>;

/// Connects one path of a session to the peer and performs the dialler's
/// half of the handshake.
pub trait PathDialer: Send + Sync + 'static {
    /// For logs: where this path goes.
    fn describe(&self) -> String;

    /// Connects, sends the HELLO `hello` builds (an encoded
    /// `esi.ModifyRequest`) and returns the connected path and the
    /// HELLO_REPLY body, within `timeout`.
    fn dial(&self, hello: HelloFn, timeout: Duration) -> BoxFuture<'static, Result<(NewPath, Bytes), PathError>>;
}

/// A TCP path to `addr`, over TLS when `tls` is set.
pub struct TcpDialer {
    pub addr: String,
    pub tls: Option<Arc<UpstreamTls>>,
}

impl PathDialer for TcpDialer {
    fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
        format!("{scheme}:{}", self.addr)
    }

    fn dial(&self, hello: HelloFn, timeout: Duration) -> BoxFuture<'static, Result<(NewPath, Bytes), PathError>> {
        let addr = self.addr.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let (io, read_buf, reply): (Box<dyn crate::session::driver::PathIo>, _, _) = match tls {
                Some(tls) => {
                    let (stream, buf, reply) = tcp::dial_tls(&addr, &tls, hello, timeout).await?;
                    (Box::new(stream), buf, reply)
                }
                None => {
                    let (stream, buf, reply) = tcp::dial(&addr, hello(&ChannelBinding::default()), timeout).await?;
                    (Box::new(stream), buf, reply)
                }
            };
            let path = crate::session::driver::StreamPath { io, read_buf, reliable: true };
            Ok((path.into(), reply))
        })
    }
}
