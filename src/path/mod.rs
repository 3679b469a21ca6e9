//! Transports that carry path frames, and the path handshake.
//!
//! A transport only has to connect to the peer, carry one HELLO and its
//! HELLO_REPLY, and then hand the session either a byte stream
//! ([`StreamPath`], e.g. TCP) or a message channel ([`MessagePath`], e.g.
//! NKN). Dialling is behind [`PathDialer`] so the session's redial logic is
//! the same for all; accepting is behind [`HelloAcceptor`], so the
//! transports hand accepted paths to whoever decides on HELLOs (the session
//! registry) without knowing it. This layer sits below the session: it
//! moves frames and never looks into them.

pub mod nkn;
pub mod tcp;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::tls::{ChannelBinding, UpstreamTls};

pub use tcp::PathError;

/// Anything a path can be read from and written to.
pub trait PathIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PathIo for T {}

/// A connected path ready to carry frames: the byte stream plus any bytes
/// read past the handshake.
pub struct StreamPath {
    pub io: Box<dyn PathIo>,
    pub read_buf: BytesMut,
    /// Whether the transport itself is reliable and ordered (TCP).
    pub reliable: bool,
}

/// A connected path over a message transport (NKN): whole messages in and
/// out, each carrying one or more complete frames. Messages may be lost,
/// duplicated or reordered; the session copes (the path is not reliable).
pub struct MessagePath {
    /// Messages to send to the peer (one message per batch of frames, not
    /// per frame).
    pub tx: mpsc::Sender<Bytes>,
    /// Messages received from the peer; closing it ends the path.
    pub rx: mpsc::Receiver<Bytes>,
    /// Largest message the transport carries (at least 128 KiB).
    pub mtu: usize,
}

/// A path handed to a session.
pub enum NewPath {
    Stream(StreamPath),
    Messages(MessagePath),
}

impl From<StreamPath> for NewPath {
    fn from(p: StreamPath) -> NewPath {
        NewPath::Stream(p)
    }
}

impl From<MessagePath> for NewPath {
    fn from(p: MessagePath) -> NewPath {
        NewPath::Messages(p)
    }
}

/// Where an accepted path goes once its HELLO_REPLY is sent.
pub type PathSink = Box<dyn FnOnce(NewPath) + Send>;

/// Decides on the HELLOs that arrive on any transport (the session
/// registry implements it).
pub trait HelloAcceptor: Send + Sync + 'static {
    /// The HELLO_REPLY body to send back and, if the path was accepted,
    /// where to hand the connected path. `channel` is what the carrying
    /// connection tells about itself; `peer` is its address (for limits).
    fn accept_hello(&self, hello: Bytes, channel: &ChannelBinding, peer: Option<IpAddr>) -> (Bytes, Option<PathSink>);
}

/// The acceptor's whole path handshake on a byte stream (TCP, TLS): reads
/// the preface and HELLO within `handshake_timeout`, sends the reply, and
/// hands an accepted path on *after* the reply, so the reply precedes
/// every session frame. `peer` names the connection in logs.
pub async fn accept_stream<S: PathIo>(
    acceptor: &dyn HelloAcceptor,
    mut stream: S,
    peer: &str,
    peer_ip: Option<IpAddr>,
    channel: ChannelBinding,
    handshake_timeout: Duration,
) {
    let (read_buf, hello) = match tcp::accept(&mut stream, handshake_timeout).await {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(%peer, error = %e, "path handshake failed");
            return;
        }
    };
    let (reply, sink) = acceptor.accept_hello(hello, &channel, peer_ip);
    if let Err(e) = tcp::reply(&mut stream, reply).await {
        tracing::info!(%peer, error = %e, "path handshake reply failed");
        return;
    }
    if let Some(sink) = sink {
        sink(StreamPath { io: Box::new(stream), read_buf, reliable: true }.into());
    }
}

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
            let (io, read_buf, reply): (Box<dyn PathIo>, _, _) = match tls {
                Some(tls) => {
                    let (stream, buf, reply) = tcp::dial_tls(&addr, &tls, hello, timeout).await?;
                    (Box::new(stream), buf, reply)
                }
                None => {
                    let (stream, buf, reply) = tcp::dial(&addr, hello(&ChannelBinding::default()), timeout).await?;
                    (Box::new(stream), buf, reply)
                }
            };
            let path = StreamPath { io, read_buf, reliable: true };
            Ok((path.into(), reply))
        })
    }
}
