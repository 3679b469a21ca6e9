//! Lets an HTTP/2 client connection's small writes wait one turn of the
//! scheduler, so a request goes out in one write rather than two.
//!
//! When a request's body is not all there as the call starts (a client
//! stream, or a message whose DATA came after its HEADERS), the body is
//! sent later, by the call's future or by a task of its own
//! ([`super::h2client`]); the connection's task would write the HEADERS
//! frame alone and the DATA in a second flush. Over TCP that is two
//! `writev` calls, and the peer wakes twice; over a session it is two DATA
//! frames on every path. The HEADERS alone are of no use to the peer: it
//! must wait for the message anyway. (A body in hand is queued with its
//! HEADERS and needs no wait.)
//!
//! [`Coalesce`] makes the first write of a small buffer return `Pending`
//! after waking its own task. tokio runs a task that woke itself after the
//! tasks already queued, so whatever sends the body runs first and queues
//! its DATA, and the connection writes HEADERS and DATA together on its
//! next poll;
//! at concurrency, the frames of more calls share the write. The next
//! write always goes through, so nothing waits longer than one turn, and a
//! write of at least [`SMALL`] bytes (bulk data, where there is nothing to
//! gain) never waits. (Measured with the h2 client at concurrency 64:
//! 20,676–22,710 calls/s with the wait, 19,120–21,143 writing at once, and
//! c1 p50 no worse; docs/performance.md.)
//!
//! Nothing waits before the peer has first been heard from: the
//! connection's preface and SETTINGS go at once, and its first read comes
//! right after them, as without this wrapper. That order matters over TLS
//! 1.3, where a server that refuses the client certificate sends its alert
//! and closes: a client that reads first sees the alert
//! ([`crate::tls::FirstRead`]), one that writes first may meet the reset.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Writes shorter than this may wait one turn (a request's HEADERS frame,
/// a WINDOW_UPDATE or a PING are far below it; a DATA frame of a bulk
/// transfer is above it).
const SMALL: usize = 4096;

/// An I/O object whose small writes wait one turn of the scheduler.
#[derive(Debug)]
pub(crate) struct Coalesce<I> {
    io: I,
    /// The peer has sent bytes: from now on small writes may wait.
    heard: bool,
    /// The last small write was put off: the next one goes through.
    waited: bool,
}

impl<I> Coalesce<I> {
    pub(crate) fn new(io: I) -> Coalesce<I> {
        Coalesce { io, heard: false, waited: false }
    }

    /// `Pending` (task woken) if a write of `len` bytes should wait a turn.
    fn wait_turn(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        if !self.heard || self.waited || len == 0 || len >= SMALL {
            self.waited = false;
            return Poll::Ready(());
        }
        self.waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Coalesce<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.heard |= buf.filled().len() > before;
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Coalesce<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.wait_turn(cx, buf.len()));
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        std::task::ready!(self.wait_turn(cx, len));
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A `Coalesce` over one end of a pipe whose peer has spoken.
    async fn heard() -> (Coalesce<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = Coalesce::new(a);
        b.write_all(b"settings").await.unwrap();
        let mut got = [0u8; 8];
        w.read_exact(&mut got).await.unwrap();
        (w, b)
    }

    #[tokio::test]
    async fn before_the_peer_spoke_nothing_waits() {
        let (a, _b) = tokio::io::duplex(1 << 16);
        let mut w = Coalesce::new(a);
        let mut preface = std::pin::pin!(w.write(b"preface"));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(preface.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    }

    #[tokio::test]
    async fn a_small_write_waits_one_turn_and_then_goes_through() {
        let (mut w, mut b) = heard().await;
        let mut first = std::pin::pin!(w.write(b"headers"));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(first.as_mut().poll(&mut cx).is_pending(), "the first small write waits");
        assert!(matches!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(7))), "then it goes through");
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"headers");
    }

    #[tokio::test]
    async fn a_large_write_never_waits() {
        let (mut w, _b) = heard().await;
        let big = vec![7u8; SMALL];
        let mut write = std::pin::pin!(w.write(&big));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(write.as_mut().poll(&mut cx), Poll::Ready(Ok(n)) if n == SMALL));
    }
}
