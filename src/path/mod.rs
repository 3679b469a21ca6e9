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

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::session::driver::NewPath;

pub use tcp::PathError;

/// Connects one path of a session to the peer and performs the dialler's
/// half of the handshake.
pub trait PathDialer: Send + Sync + 'static {
    /// For logs: where this path goes.
    fn describe(&self) -> String;

    /// Connects, sends `hello` (an encoded `esi.ModifyRequest`) and returns
    /// the connected path and the HELLO_REPLY body, within `timeout`.
    fn dial(&self, hello: Bytes, timeout: Duration) -> BoxFuture<'static, Result<(NewPath, Bytes), PathError>>;
}

/// A TCP path to `addr`.
pub struct TcpDialer {
    pub addr: String,
}

impl PathDialer for TcpDialer {
    fn describe(&self) -> String {
        format!("tcp:{}", self.addr)
    }

    fn dial(&self, hello: Bytes, timeout: Duration) -> BoxFuture<'static, Result<(NewPath, Bytes), PathError>> {
        let addr = self.addr.clone();
        Box::pin(async move {
            let (stream, read_buf, reply) = tcp::dial(&addr, hello, timeout).await?;
            let path = crate::session::driver::StreamPath { io: Box::new(stream), read_buf, reliable: true };
            Ok((path.into(), reply))
        })
    }
}
