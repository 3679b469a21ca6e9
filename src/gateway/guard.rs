//! Connection guards: what keeps slow, silent or idle peers from holding a
//! gateway's connections (and file descriptors) forever.
//!
//! - [`Greeting`] watches the first bytes a client sends on an HTTP/2
//!   connection and reports once the 24-byte client preface and the whole
//!   first SETTINGS frame have arrived; the listener closes a connection
//!   that has not done so by its handshake deadline (`[Resi]
//!   HandshakeTimeout`, counted from accept). h2 itself would wait
//!   forever.
//! - [`Activity`] counts the calls open on a connection; a connection with
//!   none for `[Resi] IdleTimeout` is closed with GOAWAY. A call is open
//!   from its complete request headers to the end of its response, so a
//!   long-lived stream that is quiet between messages (an ESI price stream)
//!   keeps its connection, and a peer that never completes a request's
//!   headers does not.
//! - [`connection_limit`]: the bound on simultaneous connections, kept
//!   below the process's open-file limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// Length of the HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;
/// Length of an HTTP/2 frame header.
const H2_FRAME_HEADER_LEN: usize = 9;
/// File descriptors kept out of `MaxConnections` for listeners, upstream
/// connections, session paths and files.
const RESERVED_FDS: u64 = 64;

/// An IO wrapper that reports (once) when the client's preface and first
/// SETTINGS frame have been read through it. It does not validate them:
/// h2 does, and fails the connection if they are wrong.
pub(crate) struct Greeting<I> {
    io: I,
    seen: usize,
    header: [u8; H2_FRAME_HEADER_LEN],
    greeted: Option<oneshot::Sender<()>>,
}

impl<I> Greeting<I> {
    /// Wraps `io`; the receiver fires when the greeting is complete, and
    /// fails if the connection ends before.
    pub(crate) fn new(io: I) -> (Greeting<I>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (Greeting { io, seen: 0, header: [0; H2_FRAME_HEADER_LEN], greeted: Some(tx) }, rx)
    }

    fn observe(&mut self, bytes: &[u8]) {
        let header_start = H2_PREFACE_LEN;
        for &b in bytes {
            if (header_start..header_start + H2_FRAME_HEADER_LEN).contains(&self.seen) {
                self.header[self.seen - header_start] = b;
            }
            self.seen += 1;
        }
        if self.seen >= header_start + H2_FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, self.header[0], self.header[1], self.header[2]]) as usize;
            if self.seen >= header_start + H2_FRAME_HEADER_LEN + len {
                if let Some(tx) = self.greeted.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Greeting<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.greeted.is_some() {
            self.observe(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Greeting<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Calls open on one connection, and since when it has had none. Atomics,
/// not a lock: every call of the connection passes here twice.
#[derive(Debug)]
pub(crate) struct Activity {
    open: AtomicUsize,
    /// When the last call ended (or the connection started), in
    /// microseconds since `epoch`; it only moves forward.
    idle_since: AtomicU64,
    epoch: Instant,
    idle: Notify,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity { open: AtomicUsize::new(0), idle_since: AtomicU64::new(0), epoch: Instant::now(), idle: Notify::new() })
    }

    /// Marks a call open until the returned guard is dropped.
    pub(crate) fn call(self: &Arc<Self>) -> CallGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    fn since(&self) -> Instant {
        self.epoch + Duration::from_micros(self.idle_since.load(Ordering::Acquire))
    }

    /// Returns once the connection has had no open call for `timeout`.
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        loop {
            // Registered before the state is read, so an end of the last
            // call in between still wakes it.
            let changed = self.idle.notified();
            let open = self.open.load(Ordering::Acquire);
            let since = self.since();
            if open > 0 {
                changed.await;
            } else if since + timeout <= Instant::now() {
                return;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep_until(since + timeout) => {}
                    _ = changed => {}
                }
            }
        }
    }
}

/// An open call; dropping it closes the call (for idleness).
#[derive(Debug)]
pub(crate) struct CallGuard(Arc<Activity>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        let a = &self.0;
        // The time first: whoever then reads `open == 0` sees it.
        let now = Instant::now().saturating_duration_since(a.epoch).as_micros() as u64;
        a.idle_since.fetch_max(now, Ordering::AcqRel);
        if a.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.idle.notify_waiters();
        }
    }
}

/// A response body that keeps its call open while it is being sent (when
/// its connection is idle-timed).
#[derive(Debug)]
pub(crate) struct Tracked<B> {
    body: B,
    _call: Option<CallGuard>,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, call: Option<CallGuard>) -> Tracked<B> {
        Tracked { body, _call: call }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The number of connections served at once: `configured`, lowered to
/// the soft open-file limit less [`RESERVED_FDS`] (at least 1), so a full
/// gateway refuses new connections instead of failing `accept` and
/// everything else that needs a descriptor.
pub(crate) fn connection_limit(configured: usize) -> usize {
    let Some(fds) = open_file_limit() else { return configured };
    let fit = fds.saturating_sub(RESERVED_FDS).max(1);
    if (configured as u64) > fit {
        tracing::warn!(
            configured,
            open_file_limit = fds,
            "[Resi] MaxConnections lowered to {fit} to fit the open-file limit"
        );
        fit as usize
    } else {
        configured
    }
}

#[cfg(unix)]
fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn greeting_fires_after_preface_and_settings() {
        let (mut client, server) = tokio::io::duplex(1024);
        let (mut g, mut greeted) = Greeting::new(server);
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0]);
        let settings = [0, 3, 0, 0, 0, 100];
        let mut buf = [0u8; 64];
        tokio::io::AsyncWriteExt::write_all(&mut client, &hello).await.unwrap();
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(n, hello.len());
        assert!(greeted.try_recv().is_err(), "not before the SETTINGS body");
        tokio::io::AsyncWriteExt::write_all(&mut client, &settings[..5]).await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 5);
        assert!(greeted.try_recv().is_err());
        tokio::io::AsyncWriteExt::write_all(&mut client, &settings[5..]).await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 1);
        assert!(greeted.try_recv().is_ok());
    }

    #[test]
    fn connection_limit_fits_the_open_file_limit() {
        assert_eq!(connection_limit(5), 5);
        match open_file_limit() {
            Some(fds) => assert_eq!(connection_limit(usize::MAX) as u64, fds.saturating_sub(RESERVED_FDS).max(1)),
            None => assert_eq!(connection_limit(usize::MAX), usize::MAX),
        }
    }

    #[tokio::test]
    async fn idle_only_without_open_calls() {
        let a = Activity::new();
        let call = a.call();
        let idle = Duration::from_millis(100);
        let waited = tokio::time::timeout(Duration::from_millis(400), a.idle_for(idle)).await;
        assert!(waited.is_err(), "an open call keeps the connection");
        drop(call);
        let start = Instant::now();
        a.idle_for(idle).await;
        assert!(start.elapsed() >= idle && start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }
}
