//! Session statistics and events as Python objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use futures_util::FutureExt;
use pyo3::exceptions::PyStopAsyncIteration;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::config::mode_name;
use crate::cookie::SessionId;
use crate::session::driver::{hex, PathReport, SessionStats as CoreStats};
use crate::session::machine::Event as CoreEvent;
use crate::session::SessionHandle;

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

#[pymethods]
impl PathStats {
    /// The counters as a plain dict (e.g. one row of a pandas DataFrame).
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", self.path)?;
        d.set_item("state", self.state)?;
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
            "PathStats(path={}, state={:?}, bytes_sent={}, bytes_received={}, first_bytes={}, duplicate_bytes={}, missed_bytes={}, rtt={rtt})",
            self.path, self.state, self.bytes_sent, self.bytes_received, self.first_bytes, self.duplicate_bytes, self.missed_bytes
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

/// Something that happened to a session or one of its paths.
///
/// ``kind`` is one of ``"path_up"`` (``readmitted`` tells a path coming
/// back), ``"path_down"`` (``reason``), ``"mismatch"`` (``offset``: copies
/// differed there), ``"latent_error"`` (``behind``: the path is up but has
/// stopped carrying its copies) and ``"session_failed"`` (``reason``).
#[pyclass(module = "resi._resi", frozen, get_all)]
pub(crate) struct Event {
    pub kind: &'static str,
    pub session_id: String,
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
        format!("Event({})", parts.join(", "))
    }
}

fn event(session: &SessionId, e: CoreEvent) -> Option<Event> {
    let mut ev = Event {
        kind: "",
        session_id: hex(session),
        path: None,
        readmitted: None,
        reason: None,
        offset: None,
        behind: None,
    };
    match e {
        CoreEvent::PathUp { path, readmitted } => {
            ev.kind = "path_up";
            ev.path = Some(path);
            ev.readmitted = Some(readmitted);
        }
        CoreEvent::PathDown { path, reason } => {
            ev.kind = "path_down";
            ev.path = Some(path);
            ev.reason = Some(reason);
        }
        CoreEvent::Mismatch { path, offset } => {
            ev.kind = "mismatch";
            ev.path = Some(path);
            ev.offset = Some(offset);
        }
        CoreEvent::Corrupt { path } => {
            ev.kind = "corrupt_frame";
            ev.path = Some(path);
        }
        CoreEvent::LatentError { path, behind } => {
            ev.kind = "latent_error";
            ev.path = Some(path);
            ev.behind = Some(behind);
        }
        CoreEvent::Failed(err) => {
            ev.kind = "session_failed";
            ev.reason = Some(err.to_string());
        }
    }
    Some(ev)
}

/// Where an event stream finds its sessions (asked again now and then: an
/// upstream session is replaced when it reconnects, a gateway accepts new
/// ones).
pub(crate) type Sources = Arc<dyn Fn() -> Vec<SessionHandle> + Send + Sync>;

/// How often the set of sessions is looked at again while waiting.
const REFRESH: Duration = Duration::from_millis(200);

struct Watch {
    sources: Sources,
    receivers: HashMap<SessionId, broadcast::Receiver<CoreEvent>>,
}

impl Watch {
    fn refresh(&mut self) {
        for handle in (self.sources)() {
            if !handle.is_closed() {
                self.receivers.entry(handle.id()).or_insert_with(|| handle.subscribe());
            }
        }
    }

    async fn next(&mut self) -> Event {
        loop {
            self.refresh();
            if self.receivers.is_empty() {
                tokio::time::sleep(REFRESH).await;
                continue;
            }
            let got = {
                let waits = self.receivers.iter_mut().map(|(id, rx)| async move { (*id, rx.recv().await) }.boxed());
                tokio::time::timeout(REFRESH, select_all(waits)).await.map(|(first, _, _)| first)
            };
            let Ok((id, result)) = got else { continue };
            match result {
                Ok(e) => {
                    if let Some(ev) = event(&id, e) {
                        return ev;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "event stream fell behind"),
                Err(RecvError::Closed) => {
                    self.receivers.remove(&id);
                }
            }
        }
    }
}

/// An async iterator of session events (``async for event in ...``).
/// Subscribed when created: events from then on are kept (the newest 256
/// per session if not read). ``close()`` ends it.
#[pyclass(module = "resi._resi", frozen)]
pub(crate) struct EventStream {
    watch: Arc<Mutex<Watch>>,
    closed: CancellationToken,
}

impl EventStream {
    pub(crate) fn new(sources: Sources) -> EventStream {
        let mut watch = Watch { sources, receivers: HashMap::new() };
        watch.refresh();
        EventStream { watch: Arc::new(Mutex::new(watch)), closed: CancellationToken::new() }
    }
}

#[pymethods]
impl EventStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (watch, closed) = (self.watch.clone(), self.closed.clone());
        pyo3_async_runtimes::tokio::future_into_py(py, async move {
            tokio::select! {
                _ = closed.cancelled() => Err(PyStopAsyncIteration::new_err(())),
                ev = async { watch.lock().await.next().await } => Ok(ev),
            }
        })
    }

    /// Ends the stream: a waiting ``__anext__`` and later ones stop.
    fn close(&self) {
        self.closed.cancel();
    }
}
