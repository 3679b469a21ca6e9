//! Session statistics and events as Python objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::select_all;
use futures_util::FutureExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::mode_name;
use crate::cookie::SessionId;
use crate::session::driver::{hex, PathReport, SessionStats as CoreStats};
use crate::session::machine::Event as CoreEvent;
use crate::session::paths::{PathBook, PathNote};
use crate::session::{SessionError, SessionHandle};

/// Counters of one path of a session.
///
/// ``first_bytes``, ``duplicate_bytes`` and ``missed_bytes`` are the
/// PRP-style redundancy counters: stream bytes this path delivered first,
/// brought as a duplicate of another path's copy, or never brought.
#[pyclass(module = "resi._resi", frozen, get_all)]
#[derive(Clone)]
pub(crate) struct PathStats {
    pub path: u32,
    /// ``"up"`` or ``"down"``.
    pub state: &'static str,
    /// ``"tcp"``, ``"tls"`` or ``"nkn"`` (None for a path accepted from a
    /// dialling gateway).
    pub transport: Option<String>,
    /// Where the path goes: ``host:port`` or the peer's NKN address (None
    /// for a path accepted from a dialling gateway).
    pub address: Option<String>,
    /// Why the path is down (None while up, or when not known).
    pub reason: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub data_bytes_sent: u64,
    pub retransmitted_bytes: u64,
    pub mismatches: u64,
    /// Frames that failed their CRC-32C (discarded unused).
    pub corrupt_frames: u64,
    pub first_bytes: u64,
    pub duplicate_bytes: u64,
    pub missed_bytes: u64,
    pub latent_errors: u64,
    /// Smoothed round-trip time in seconds (None before the first PONG).
    pub rtt: Option<f64>,
    /// How often the path was admitted (re-admissions count).
    pub admissions: u64,
}

impl From<&PathReport> for PathStats {
    fn from(r: &PathReport) -> PathStats {
        let s = &r.stats;
        PathStats {
            path: r.path,
            state: if r.live { "up" } else { "down" },
            transport: None,
            address: None,
            reason: None,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            frames_sent: s.frames_sent,
            frames_received: s.frames_received,
            data_bytes_sent: s.data_bytes_sent,
            retransmitted_bytes: s.retransmitted_bytes,
            mismatches: s.mismatches,
            corrupt_frames: s.corrupt_frames,
            first_bytes: s.first_bytes,
            duplicate_bytes: s.duplicate_bytes,
            missed_bytes: s.missed_bytes,
            latent_errors: s.latent_errors,
            rtt: s.rtt.map(|d| d.as_secs_f64()),
            admissions: s.admissions,
        }
    }
}

impl PathStats {
    /// A configured path that is not in the session (never joined, or
    /// dropped): zero counters, down, with its reason.
    fn configured(path: u32, note: &PathNote) -> PathStats {
        let report = PathReport { path, live: false, stats: Default::default() };
        let mut p = PathStats::from(&report);
        p.describe(note);
        p
    }

    fn describe(&mut self, note: &PathNote) {
        self.transport = Some(note.transport.clone());
        self.address = Some(note.address.clone());
        if self.state != "up" {
            self.reason = note.down_reason.clone().or_else(|| Some("down".to_string()));
        }
    }
}

#[pymethods]
impl PathStats {
    /// The counters as a plain dict (e.g. one row of a pandas DataFrame).
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", self.path)?;
        d.set_item("state", self.state)?;
        d.set_item("transport", &self.transport)?;
        d.set_item("address", &self.address)?;
        d.set_item("reason", &self.reason)?;
        for (k, v) in [
            ("bytes_sent", self.bytes_sent),
            ("bytes_received", self.bytes_received),
            ("frames_sent", self.frames_sent),
            ("frames_received", self.frames_received),
            ("data_bytes_sent", self.data_bytes_sent),
            ("retransmitted_bytes", self.retransmitted_bytes),
            ("mismatches", self.mismatches),
            ("corrupt_frames", self.corrupt_frames),
            ("first_bytes", self.first_bytes),
            ("duplicate_bytes", self.duplicate_bytes),
            ("missed_bytes", self.missed_bytes),
            ("latent_errors", self.latent_errors),
            ("admissions", self.admissions),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("rtt", self.rtt)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let rtt = self.rtt.map_or("None".to_string(), |r| format!("{:.1}ms", r * 1e3));
        format!(
            "PathStats(path={}, state={:?}, transport={:?}, address={:?}, reason={:?}, bytes_sent={}, bytes_received={}, first_bytes={}, duplicate_bytes={}, missed_bytes={}, rtt={rtt})",
            self.path, self.state, self.transport, self.address, self.reason, self.bytes_sent, self.bytes_received, self.first_bytes, self.duplicate_bytes, self.missed_bytes
        )
    }
}

/// A snapshot of one redundant session.
#[pyclass(module = "resi._resi", frozen, get_all)]
pub(crate) struct SessionStats {
    /// Hex id of the session.
    pub session_id: String,
    /// ``"strict"`` or ``"permissive"``.
    pub mode: &'static str,
    /// Stream bytes delivered to the application so far.
    pub delivered: u64,
    /// Bytes held in buffers now.
    pub buffered: usize,
    pub paths: Vec<PathStats>,
}

impl From<CoreStats> for SessionStats {
    fn from(s: CoreStats) -> SessionStats {
        SessionStats {
            session_id: s.session_id,
            mode: mode_name(s.mode),
            delivered: s.delivered,
            buffered: s.buffered,
            paths: s.paths.iter().map(PathStats::from).collect(),
        }
    }
}

#[pymethods]
impl SessionStats {
    fn __repr__(&self) -> String {
        let up = self.paths.iter().filter(|p| p.state == "up").count();
        format!(
            "SessionStats(session_id={:?}, mode={:?}, delivered={}, paths={} ({} up))",
            self.session_id,
            self.mode,
            self.delivered,
            self.paths.len(),
            up
        )
    }
}

/// Stats of `handle`, or None once it ended.
pub(crate) async fn stats_of(handle: Option<SessionHandle>) -> Option<SessionStats> {
    handle?.stats().await.map(SessionStats::from)
}

/// Stats of the dialling side's session `handle` with every configured
/// path of `book` in them (those that are not in the session as down,
/// with their reason), or None once it ended.
pub(crate) async fn dialled_stats_of(handle: Option<SessionHandle>, book: Option<PathBook>) -> Option<SessionStats> {
    let mut stats = stats_of(handle).await?;
    let Some(book) = book else { return Some(stats) };
    for (i, note) in book.notes().iter().enumerate() {
        match stats.paths.iter_mut().find(|p| p.path as usize == i) {
            Some(p) => p.describe(note),
            None => stats.paths.push(PathStats::configured(i as u32, note)),
        }
    }
    stats.paths.sort_by_key(|p| p.path);
    Some(stats)
}

/// Something that happened to a session or one of its paths.
///
/// ``kind`` is one of ``"path_up"`` (``readmitted`` tells a path coming
/// back), ``"path_down"`` (``reason``), ``"mismatch"`` (``offset``: copies
/// differed there), ``"corrupt_frame"``, ``"latent_error"`` (``behind``:
/// the path is up but has stopped carrying its copies),
/// ``"session_failed"`` (``reason``) and ``"session_closed"`` (``reason``:
/// why it ended; always a session's last event). ``timestamp`` is when it
/// happened, in seconds since the Unix epoch (as ``time.time()``).
#[pyclass(module = "resi._resi", frozen, get_all)]
pub(crate) struct Event {
    pub kind: &'static str,
    pub session_id: String,
    pub timestamp: f64,
    pub path: Option<u32>,
    pub readmitted: Option<bool>,
    pub reason: Option<String>,
    pub offset: Option<u64>,
    pub behind: Option<u64>,
}

#[pymethods]
impl Event {
    fn __repr__(&self) -> String {
        let mut parts = vec![format!("kind={:?}", self.kind)];
        if let Some(p) = self.path {
            parts.push(format!("path={p}"));
        }
        if let Some(r) = self.readmitted {
            parts.push(format!("readmitted={}", if r { "True" } else { "False" }));
        }
        if let Some(r) = &self.reason {
            parts.push(format!("reason={r:?}"));
        }
        if let Some(o) = self.offset {
            parts.push(format!("offset={o}"));
        }
        if let Some(b) = self.behind {
            parts.push(format!("behind={b}"));
        }
        parts.push(format!("timestamp={:.3}", self.timestamp));
        format!("Event({})", parts.join(", "))
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Event {
    fn new(kind: &'static str, session: &SessionId) -> Event {
        Event {
            kind,
            session_id: hex(session),
            timestamp: now(),
            path: None,
            readmitted: None,
            reason: None,
            offset: None,
            behind: None,
        }
    }

    /// The last event of a session that ended for `reason`.
    fn closed(session: &SessionId, reason: Option<SessionError>) -> Event {
        let mut ev = Event::new("session_closed", session);
        ev.reason = Some(reason.unwrap_or(SessionError::Closed).to_string());
        ev
    }
}

fn event(session: &SessionId, e: CoreEvent) -> Option<Event> {
    let (kind, path) = match &e {
        CoreEvent::PathUp { path, .. } => ("path_up", Some(*path)),
        CoreEvent::PathDown { path, .. } => ("path_down", Some(*path)),
        CoreEvent::Mismatch { path, .. } => ("mismatch", Some(*path)),
        CoreEvent::Corrupt { path } => ("corrupt_frame", Some(*path)),
        CoreEvent::LatentError { path, .. } => ("latent_error", Some(*path)),
        CoreEvent::Failed(_) => ("session_failed", None),
    };
    let mut ev = Event::new(kind, session);
    ev.path = path;
    match e {
        CoreEvent::PathUp { readmitted, .. } => ev.readmitted = Some(readmitted),
        CoreEvent::PathDown { reason, .. } => ev.reason = Some(reason),
        CoreEvent::Mismatch { offset, .. } => ev.offset = Some(offset),
        CoreEvent::LatentError { behind, .. } => ev.behind = Some(behind),
        CoreEvent::Failed(err) => ev.reason = Some(err.to_string()),
        CoreEvent::Corrupt { .. } => {}
    }
    Some(ev)
}

/// Where an event stream finds its sessions (asked again now and then: an
/// upstream session is replaced when it reconnects, a gateway accepts new
/// ones); None once the client or gateway they belong to is closed.
pub(crate) type Sources = Arc<dyn Fn() -> Option<Vec<SessionHandle>> + Send + Sync>;

/// How often the set of sessions is looked at again while waiting.
const REFRESH: Duration = Duration::from_millis(200);
/// Events kept for a reader that does not keep up (older ones are dropped).
const BACKLOG: usize = 1024;
/// After its owner closed, how long the stream waits for the sessions to
/// end (and their `session_closed` events) before it ends anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

struct Watched {
    handle: SessionHandle,
    rx: broadcast::Receiver<CoreEvent>,
}

/// Reads the sessions' events as they happen, stamps them and hands them
/// to the stream; ends (closing the channel) once its owner is closed and
/// every session it watched has ended.
struct Forwarder {
    sources: Sources,
    sessions: HashMap<SessionId, Watched>,
    out: mpsc::Sender<Event>,
    owner_closed: Option<Instant>,
}

impl Forwarder {
    fn refresh(&mut self) {
        let Some(handles) = (self.sources)() else {
            self.owner_closed.get_or_insert_with(Instant::now);
            return;
        };
        for handle in handles {
            if !handle.is_closed() {
                self.sessions.entry(handle.id()).or_insert_with(|| Watched { rx: handle.subscribe(), handle });
            }
        }
    }

    fn emit(&self, ev: Event) {
        if self.out.try_send(ev).is_err() {
            tracing::debug!("event stream full: an event was dropped");
        }
    }

    fn done(&self) -> bool {
        self.out.is_closed()
            || self.owner_closed.is_some_and(|t| self.sessions.is_empty() || t.elapsed() >= CLOSE_WAIT)
    }

    async fn run(mut self) {
        while !self.done() {
            self.refresh();
            if self.sessions.is_empty() {
                if self.owner_closed.is_none() {
                    tokio::time::sleep(REFRESH).await;
                }
                continue;
            }
            let next = {
                let waits = self.sessions.iter_mut().map(|(id, w)| {
                    async move {
                        tokio::select! {
                            biased;
                            r = w.rx.recv() => (*id, Some(r)),
                            _ = w.handle.closed() => (*id, None),
                        }
                    }
                    .boxed()
                });
                tokio::time::timeout(REFRESH, select_all(waits)).await.map(|(first, _, _)| first)
            };
            match next {
                Err(_) => {}
                Ok((id, Some(Ok(e)))) => {
                    if let Some(ev) = event(&id, e) {
                        self.emit(ev);
                    }
                }
                Ok((_, Some(Err(RecvError::Lagged(n))))) => tracing::debug!(skipped = n, "event stream fell behind"),
                Ok((id, Some(Err(RecvError::Closed)) | None)) => self.ended(id),
            }
        }
    }

    /// A session ended: its last queued events, then `session_closed`.
    fn ended(&mut self, id: SessionId) {
        let Some(mut w) = self.sessions.remove(&id) else { return };
        while let Ok(e) = w.rx.try_recv() {
            if let Some(ev) = event(&id, e) {
                self.emit(ev);
            }
        }
        self.emit(Event::closed(&id, w.handle.close_reason()));
    }
}

/// An async iterator of session events (``async for event in ...``).
/// Subscribed when created: events from then on are kept (the newest 1024
/// if not read). It ends after the last ``session_closed`` event once the
/// client or gateway is closed, or when ``close()`` is called.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct EventStream {
    rx: Arc<Mutex<mpsc::Receiver<Event>>>,
    closed: CancellationToken,
}

impl EventStream {
    pub(crate) fn new(sources: Sources) -> EventStream {
        let (out, rx) = mpsc::channel(BACKLOG);
        let mut forwarder = Forwarder { sources, sessions: HashMap::new(), out, owner_closed: None };
        forwarder.refresh();
        let closed = CancellationToken::new();
        let stop = closed.clone();
        super::runtime::get().spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = forwarder.run() => {}
            }
        });
        EventStream { rx: Arc::new(Mutex::new(rx)), closed }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

#[pymethods]
impl EventStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (rx, closed) = (self.rx.clone(), self.closed.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            let next = tokio::select! {
                biased;
                _ = closed.cancelled() => None,
                ev = async { rx.lock().await.recv().await } => ev,
            };
            next.ok_or_else(|| PyStopAsyncIteration::new_err(()))
        })
    }

    /// Ends the stream: a waiting ``__anext__`` and later ones stop.
    fn close(&self) {
        self.closed.cancel();
    }
}
