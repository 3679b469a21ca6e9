//! Runs a session state machine on tokio. (Skeleton; being written.)

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::SessionError;

/// The session seen as a byte stream (HTTP/2 runs over it).
pub struct SessionStream {
    _private: (),
}

impl AsyncRead for SessionStream {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, _buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        unimplemented!("skeleton")
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, _buf: &[u8]) -> Poll<std::io::Result<usize>> {
        unimplemented!("skeleton")
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        unimplemented!("skeleton")
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        unimplemented!("skeleton")
    }
}

/// Control and observation of a running session.
#[derive(Clone)]
pub struct SessionHandle {
    _private: (),
}

impl SessionHandle {
    /// Resolves when the session has ended, with the reason.
    pub async fn closed(&self) -> SessionError {
        unimplemented!("skeleton")
    }
    /// Ends the session (both directions, all paths).
    pub fn close(&self) {}
}
