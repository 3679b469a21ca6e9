//! RESI paths over TCP.
//!
//! A TCP path starts with an 8-byte preface (`RESI\r\n` and the frame-format
//! version), so that one listener can take
//! both HTTP/2 (whose preface starts `PRI `) and RESI paths, followed by a
//! HELLO frame (an encoded `esi.ModifyRequest` carrying the redundancy
//! extension) and its HELLO_REPLY. Frames follow in both directions.
//!
//! With `[Tls] UpstreamCa` the dialler runs TLS 1.3 (ALPN `resi/1`) on the
//! TCP connection first, and everything above, preface included, travels
//! inside it ([`dial_tls`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::frame::{Frame, FrameError};
use crate::tls::{Alpn, ChannelBinding, UpstreamTls};

/// First bytes a dialler writes on a TCP path; a gateway's listener tells a
/// RESI path from HTTP/2 (whose preface starts `PRI `) by them. The last
/// two bytes are the frame-format version: 2 since frames carry a CRC-32C.
pub const PREFACE: &[u8; 8] = b"RESI\r\n\x00\x02";

/// Largest HELLO or HELLO_REPLY accepted (they carry a few cookies).
const MAX_HANDSHAKE_FRAME: usize = 64 * 1024;

/// Why a path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls { addr: String, source: std::io::Error },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("not a RESI path (bad preface)")]
    BadPreface,
    #[error("RESI path frame format version {0} is not supported (this hop speaks 2)")]
    Version(u16),
    #[error("bad handshake frame: {0}")]
    Frame(#[from] FrameError),
    #[error("unexpected frame during the handshake")]
    Unexpected,
    #[error("connection closed during the handshake")]
    Closed,
}

/// Opens a TCP connection with `TCP_NODELAY` set.
pub async fn connect(addr: &str) -> Result<TcpStream, PathError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| PathError::Connect { addr: addr.to_string(), source })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Dials `addr` over plain TCP and performs the dialler's half of the
/// handshake. Returns the stream, bytes read past the reply, and the
/// HELLO_REPLY body.
pub async fn dial(addr: &str, hello: Bytes, timeout: Duration) -> Result<(TcpStream, BytesMut, Bytes), PathError> {
    let attempt = async {
        let mut stream = connect(addr).await?;
        let (buf, reply) = handshake(&mut stream, hello).await?;
        Ok((stream, buf, reply))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| PathError::Timeout(timeout))?
}

/// Dials `addr` with TLS (ALPN `resi/1`, verified by `tls`) and performs
/// the handshake inside it; `hello` is built from the connection's
/// [`ChannelBinding`] (so a merge can be bound to it).
pub async fn dial_tls(
    addr: &str,
    tls: &UpstreamTls,
    hello: impl FnOnce(&ChannelBinding) -> Bytes,
    timeout: Duration,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, BytesMut, Bytes), PathError> {
    let attempt = async {
        let tcp = connect(addr).await?;
        let mut stream =
            tls.connect(tcp, addr, Alpn::Resi).await.map_err(|source| PathError::Tls { addr: addr.to_string(), source })?;
        let binding = ChannelBinding::of(stream.get_ref().1);
        let (buf, reply) = handshake(&mut stream, hello(&binding)).await?;
        Ok((stream, buf, reply))
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| PathError::Timeout(timeout))?
}

/// The dialler's half on a connected stream: preface and HELLO out, the
/// HELLO_REPLY in.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, hello: Bytes) -> Result<(BytesMut, Bytes), PathError> {
    let mut out = BytesMut::with_capacity(PREFACE.len() + hello.len() + crate::frame::HEADER_LEN);
    out.extend_from_slice(PREFACE);
    Frame::Hello(hello).encode(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    match read_frame(stream, &mut buf).await? {
        Frame::HelloReply(body) => Ok((buf, body)),
        _ => Err(PathError::Unexpected),
    }
}

/// The acceptor's half: checks the preface and reads the HELLO body.
pub async fn accept<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> Result<(BytesMut, Bytes), PathError> {
    let attempt = async {
        let mut preface = [0u8; 8];
        stream.read_exact(&mut preface).await?;
        if preface[..6] != PREFACE[..6] {
            return Err(PathError::BadPreface);
        }
        if preface[6..] != PREFACE[6..] {
            return Err(PathError::Version(u16::from_be_bytes([preface[6], preface[7]])));
        }
        let mut buf = BytesMut::with_capacity(4096);
        match read_frame(stream, &mut buf).await? {
            Frame::Hello(body) => Ok((buf, body)),
            _ => Err(PathError::Unexpected),
        }
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| PathError::Timeout(timeout))?
}

/// Writes a HELLO_REPLY.
pub async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, body: Bytes) -> Result<(), PathError> {
    let mut out = BytesMut::new();
    Frame::HelloReply(body).encode(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> Result<Frame, PathError> {
    loop {
        if let Some(frame) = Frame::decode(buf, MAX_HANDSHAKE_FRAME)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(PathError::Closed);
        }
    }
}
