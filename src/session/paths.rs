//! The dialling side's record of its configured paths.
//!
//! A session only knows the paths that joined it; an operator wants every
//! configured path, with where it goes and why it is down — a TCP address
//! that refuses connections or an NKN peer whose seeds cannot be reached
//! would otherwise be missing from the statistics altogether. A
//! [`PathBook`] lives as long as the upstream (across sessions): diallers
//! wrapped in [`NotedDialer`] record their failures, and a watcher of each
//! session's events records paths going up and down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast::error::RecvError;

use super::driver::NewPath;
use super::machine::Event;
use super::SessionHandle;
use crate::path::{HelloFn, PathDialer, PathError};

/// What is known of one configured path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathNote {
    /// `"tcp"`, `"tls"` or `"nkn"`.
    pub transport: String,
    /// Where it goes: `host:port`, or the peer's NKN address.
    pub address: String,
    /// Why it is down (None while it is up).
    pub down_reason: Option<String>,
}

/// Every configured path of an upstream, by path id.
#[derive(Clone, Debug, Default)]
pub struct PathBook(Arc<Mutex<Vec<PathNote>>>);

/// The reason of a path that has not joined a session yet.
pub const NOT_JOINED: &str = "not joined yet";

impl PathBook {
    /// A book of paths described as `transport:address` (as
    /// [`PathDialer::describe`] gives them), path id = position.
    pub fn new(described: impl IntoIterator<Item = String>) -> PathBook {
        let notes = described
            .into_iter()
            .map(|d| {
                let (transport, address) = d.split_once(':').unwrap_or(("", d.as_str()));
                PathNote {
                    transport: transport.to_string(),
                    address: address.to_string(),
                    down_reason: Some(NOT_JOINED.to_string()),
                }
            })
            .collect();
        PathBook(Arc::new(Mutex::new(notes)))
    }

    /// A snapshot of every path.
    pub fn notes(&self) -> Vec<PathNote> {
        self.lock().clone()
    }

    /// Path `path` is down for `reason`.
    pub fn down(&self, path: u32, reason: impl Into<String>) {
        if let Some(n) = self.lock().get_mut(path as usize) {
            n.down_reason = Some(reason.into());
        }
    }

    /// Path `path` is up.
    pub fn up(&self, path: u32) {
        if let Some(n) = self.lock().get_mut(path as usize) {
            n.down_reason = None;
        }
    }

    /// Records the paths of `session` going up and down until it ends;
    /// then every path is down with the session's end as the reason.
    pub fn watch(&self, session: &SessionHandle) {
        let (book, session) = (self.clone(), session.clone());
        let mut events = session.subscribe();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    reason = session.closed() => {
                        book.all_down(&format!("session ended: {reason}"));
                        return;
                    }
                };
                match event {
                    Ok(Event::PathUp { path, .. }) => book.up(path),
                    Ok(Event::PathDown { path, reason }) => book.down(path, reason),
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    fn all_down(&self, reason: &str) {
        for n in self.lock().iter_mut() {
            n.down_reason = Some(reason.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathNote>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A dialler that records in a [`PathBook`] why its dials fail.
pub struct NotedDialer {
    pub inner: Box<dyn PathDialer>,
    pub book: PathBook,
    pub path: u32,
}

impl PathDialer for NotedDialer {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn dial(&self, hello: HelloFn, timeout: Duration) -> BoxFuture<'static, Result<(NewPath, Bytes), PathError>> {
        let dial = self.inner.dial(hello, timeout);
        let (book, path) = (self.book.clone(), self.path);
        Box::pin(async move {
            let result = dial.await;
            if let Err(e) = &result {
                book.down(path, format!("dial failed: {e}"));
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_book_names_every_path_and_tracks_its_state() {
        let book = PathBook::new(["tcp:127.0.0.1:1".to_string(), "nkn:peer.abc".to_string()]);
        let notes = book.notes();
        assert_eq!((notes[0].transport.as_str(), notes[0].address.as_str()), ("tcp", "127.0.0.1:1"));
        assert_eq!((notes[1].transport.as_str(), notes[1].address.as_str()), ("nkn", "peer.abc"));
        assert!(notes.iter().all(|n| n.down_reason.as_deref() == Some(NOT_JOINED)));
        book.up(1);
        book.down(0, "dial failed: refused");
        book.down(7, "ignored: no such path");
        let notes = book.notes();
        assert_eq!(notes[0].down_reason.as_deref(), Some("dial failed: refused"));
        assert_eq!(notes[1].down_reason, None);
        book.all_down("session ended");
        assert!(book.notes().iter().all(|n| n.down_reason.as_deref() == Some("session ended")));
    }
}
