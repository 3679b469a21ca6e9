//! Runs one session state machine on tokio: the thin I/O shell around
//! [`Machine`], built the way quinn builds its connection.
//!
//! All of a session's state sits behind one lock ([`Shared`]: the machine
//! and the wakers of the application's reader and writer and of the
//! driver). The application side, [`SessionStream`], writes into the
//! machine's send buffer and reads out of its delivered stream directly
//! under that lock — no channel, no task hop, no extra copy. Back-pressure
//! is the machine's: a writer is parked while the send window is full, a
//! reader while nothing is deliverable, and each is woken by the driver
//! when that changes.
//!
//! One driver future per session owns every path's transport whole (no
//! split halves, no reader or flush tasks). Each turn it reads every path
//! into that path's buffer until the transport has nothing more, decodes
//! the frames, feeds them to the machine, and then writes what the machine
//! has to send with vectored writes: a DATA payload is a `Bytes` slice of
//! the one send buffer, written beside its 20-byte header, so it is not
//! copied once per path. A path whose transport cannot take bytes keeps
//! its queued frames and gets nothing more from the machine until it has
//! written them: it falls behind (its cursor lags, and what the peer
//! already has is skipped) and never blocks the session or the other
//! paths. A message path (NKN) is the same with whole messages handed to
//! the transport's writer (one message per batch of frames). Timers are
//! the machine's deadlines on one `Sleep`.
//!
//! When the session ends the reason is published (on
//! [`SessionHandle::closed`]) before the application sees the stream end,
//! so whoever sees it end can already tell why (a mismatch makes calls
//! `DATA_LOSS`); then a `Close` goes out on every path still open, written
//! for at most [`CLOSE_FLUSH`], and the transports are dropped.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSender;

use super::control;
use super::machine::{Event, Machine, PathId, PathStats};
use super::{Mode, SessionConfig, SessionError};
use crate::cookie::{CookieJar, SessionId};
use crate::frame::{Frame, Segments};
pub use crate::path::{MessagePath, NewPath, PathIo, StreamPath};

/// Bytes of frames taken from the machine for one path at once.
const BATCH_BUDGET: usize = 256 * 1024;
/// Buffers handed to one vectored write.
const IOV_MAX: usize = 64;
/// Reads (or messages) taken from one path per turn, so that one busy path
/// cannot starve the others.
const READS_PER_TURN: usize = 8;
/// Room a path's read buffer is given when it grows, beyond the rest of a
/// frame already begun. Whole frames leave the buffer as shared slices
/// (the machine keeps them), so growing it cannot reuse its front: it
/// moves the partial frame at its end to a new buffer. Growing by this
/// much makes that one move per 256 KiB read rather than one per read,
/// and lets one read take several 64 KiB frames.
const READ_ROOM: usize = 256 * 1024;
/// Free space below which a read buffer is grown before the next read,
/// and the size of a fresh one: a path that carries little (heartbeats,
/// small calls) never holds more.
const READ_MIN: usize = 16 * 1024;
/// An empty read buffer larger than this is let go when its path has
/// nothing more to read: a path that carried bulk data does not keep
/// [`READ_ROOM`] while idle.
const READ_KEEP: usize = 64 * 1024;
/// Turns of the driver before it yields to other tasks.
const TURNS_PER_POLL: usize = 16;
/// How long the final `Close` frames may take to leave.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// One path's counters with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct PathReport {
    pub path: PathId,
    pub live: bool,
    pub stats: PathStats,
}

/// A snapshot of a session's state.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionStats {
    pub session_id: String,
    pub mode: Mode,
    pub delivered: u64,
    pub buffered: usize,
    pub paths: Vec<PathReport>,
}

/// Which end of the session this is: the acceptor issues the cookies its
/// peer asks for from its jar, the dialler starts with the cookies of its
/// `opened` answer (valid for `ttl`).
pub enum Role {
    Acceptor { jar: Arc<Mutex<CookieJar>>, cookie_ttl: Duration },
    Dialer { cookies: Vec<Bytes>, ttl: Duration },
}

/// A path handed over by [`SessionHandle::add_path`], for the driver.
struct Incoming {
    path: PathId,
    conn: NewPath,
    on_close: Option<oneshot::Sender<()>>,
}

/// Everything of a session that the application, the handles and the
/// driver share, behind one lock.
struct Shared {
    machine: Machine,
    incoming: Vec<Incoming>,
    close_requested: bool,
    /// Why the session is to end with an error ([`SessionHandle::end`]).
    end_requested: Option<SessionError>,
    /// Set (with the `closed` watch) once the session is over.
    ended: Option<SessionError>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    driver: Option<Waker>,
}

impl Shared {
    fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    /// Wakes the application's reader and writer if they can go on.
    fn wake_app(&mut self) {
        let over = self.ended.is_some() || self.machine.failed().is_some();
        if over || self.machine.has_deliverable() || self.machine.at_eof() {
            if let Some(w) = self.reader.take() {
                w.wake();
            }
        }
        if over || self.machine.send_capacity() > 0 {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
    }
}

type SharedRef = Arc<Mutex<Shared>>;

fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    shared.lock().expect("session lock")
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Control and observation of a running session.
#[derive(Clone)]
pub struct SessionHandle {
    id: SessionId,
    shared: SharedRef,
    closed: watch::Receiver<Option<SessionError>>,
    events: broadcast::Sender<Event>,
}

impl SessionHandle {
    /// The session's id (random, 16 bytes).
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Resolves when the session has ended, with the reason.
    pub async fn closed(&self) -> SessionError {
        let mut rx = self.closed.clone();
        let result = match rx.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone().unwrap_or(SessionError::Closed),
            Err(_) => SessionError::Closed,
        };
        result
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<SessionError> {
        self.closed.borrow().clone()
    }

    /// Ends the session (both directions, all paths).
    pub fn close(&self) {
        let mut sh = lock(&self.shared);
        sh.close_requested = true;
        sh.wake_driver();
    }

    /// Ends the session with `reason` (its `Close` says `ABORTED`, §8.5).
    pub fn end(&self, reason: SessionError) {
        let mut sh = lock(&self.shared);
        sh.end_requested.get_or_insert(reason);
        sh.wake_driver();
    }

    /// How many paths are live now (in the live set, §8).
    pub fn live_paths(&self) -> usize {
        lock(&self.shared).machine.live_count()
    }

    /// Hands a connected path to the session. `on_close` fires when the
    /// session lets go of it (the path died or the session ended).
    pub fn add_path(&self, path: PathId, conn: impl Into<NewPath>, on_close: Option<oneshot::Sender<()>>) {
        let mut sh = lock(&self.shared);
        if sh.ended.is_none() {
            sh.incoming.push(Incoming { path, conn: conn.into(), on_close });
            sh.wake_driver();
        }
    }

    /// A snapshot of the session's counters (None once it has ended).
    pub async fn stats(&self) -> Option<SessionStats> {
        let sh = lock(&self.shared);
        if sh.ended.is_some() {
            return None;
        }
        Some(stats(&sh.machine, &self.id))
    }

    /// Path and session events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Runs `f` on the machine under the session's lock, then lets the
    /// driver look at what changed.
    fn with_machine<T>(&self, f: impl FnOnce(&mut Machine) -> T) -> T {
        let mut sh = lock(&self.shared);
        let out = f(&mut sh.machine);
        sh.wake_driver();
        out
    }

    /// Dialler: a merge cookie for an attempt (None when there is none).
    pub fn take_cookie(&self) -> Option<Bytes> {
        self.with_machine(|m| m.take_cookie())
    }

    /// Dialler: the attempt did not reach the peer; the cookie is kept.
    pub fn give_back_cookie(&self, cookie: Bytes) {
        self.with_machine(|m| m.give_back_cookie(cookie))
    }

    /// Dialler: the merge succeeded and brought `next_cookie`.
    pub fn cookie_merged(&self, next_cookie: Bytes) {
        self.with_machine(|m| m.cookie_merged(next_cookie))
    }

    /// Dialler: the peer refused (and consumed) the cookie.
    pub fn cookie_spent(&self) {
        self.with_machine(|m| m.cookie_spent())
    }
}

/// Starts a session's driver; returns the application's stream and a handle.
pub fn spawn(cfg: SessionConfig, role: Role, id: SessionId) -> (SessionStream, SessionHandle) {
    let start = now();
    let (machine, jar) = match role {
        Role::Acceptor { jar, cookie_ttl } => (Machine::new(cfg.clone(), start), Some((jar, cookie_ttl))),
        Role::Dialer { cookies, ttl } => (Machine::dialer(cfg.clone(), start, cookies, ttl), None),
    };
    let shared = Arc::new(Mutex::new(Shared {
        machine,
        incoming: Vec::new(),
        close_requested: false,
        end_requested: None,
        ended: None,
        reader: None,
        writer: None,
        driver: None,
    }));
    let (closed_tx, closed_rx) = watch::channel(None);
    let (events_tx, _) = broadcast::channel(256);
    let driver = Driver {
        shared: shared.clone(),
        id,
        jar,
        max_frame: cfg.max_frame,
        conns: HashMap::new(),
        sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
        deadline: None,
        events: events_tx.clone(),
        closed: closed_tx,
        ending: None,
    };
    tokio::spawn(async move {
        let reason = driver.await;
        tracing::debug!(%reason, "session ended");
    });
    let stream = SessionStream { shared: shared.clone(), write_closed: false };
    let handle = SessionHandle { id, shared, closed: closed_rx, events: events_tx };
    (stream, handle)
}

fn stats(machine: &Machine, id: &SessionId) -> SessionStats {
    let paths = machine
        .path_ids()
        .into_iter()
        .map(|path| PathReport { path, live: machine.is_live(path), stats: machine.path_stats(path).unwrap_or_default() })
        .collect();
    SessionStats {
        session_id: hex(id),
        mode: machine.mode(),
        delivered: machine.delivered(),
        buffered: machine.buffered_bytes(),
        paths,
    }
}

/// How a path's bytes move.
enum Transport {
    Stream {
        io: Box<dyn PathIo>,
        read_buf: BytesMut,
        /// Written bytes a buffering transport (TLS) may still hold.
        unflushed: bool,
    },
    Messages {
        tx: PollSender<Bytes>,
        rx: mpsc::Receiver<Bytes>,
        mtu: usize,
        /// Messages cut from `out`, waiting for the transport's writer.
        messages: VecDeque<Bytes>,
    },
}

/// One path's transport and the frames it has yet to write.
struct Conn {
    transport: Transport,
    out: Segments,
    /// Reading stopped (end of stream, or a frame that ends the path).
    read_done: bool,
    on_close: Option<oneshot::Sender<()>>,
}

impl Conn {
    fn new(conn: NewPath, on_close: Option<oneshot::Sender<()>>) -> (Conn, bool) {
        let (transport, reliable) = match conn {
            NewPath::Stream(p) => (Transport::Stream { io: p.io, read_buf: p.read_buf, unflushed: false }, p.reliable),
            NewPath::Messages(p) => {
                let transport = Transport::Messages { tx: PollSender::new(p.tx), rx: p.rx, mtu: p.mtu, messages: VecDeque::new() };
                (transport, false)
            }
        };
        (Conn { transport, out: Segments::default(), read_done: false, on_close }, reliable)
    }

    /// Whether everything handed to this path has left: it may take more.
    fn idle(&self) -> bool {
        self.out.is_empty()
            && match &self.transport {
                Transport::Stream { .. } => true,
                Transport::Messages { messages, .. } => messages.is_empty(),
            }
    }

    fn budget(&self) -> usize {
        match &self.transport {
            Transport::Stream { .. } => BATCH_BUDGET,
            Transport::Messages { mtu, .. } => (*mtu).min(BATCH_BUDGET),
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(tx) = self.on_close.take() {
            let _ = tx.send(());
        }
    }
}

/// What reading a path produced, for the machine.
enum Input {
    Frame(Frame),
    /// A frame failed its CRC-32C and was discarded.
    Corrupt,
    /// The path ended (closed, failed, or a frame that ends it).
    Closed(String),
}

/// The future that runs one session.
struct Driver {
    shared: SharedRef,
    id: SessionId,
    /// Acceptor: where cookies the peer asks for come from.
    jar: Option<(Arc<Mutex<CookieJar>>, Duration)>,
    max_frame: usize,
    conns: HashMap<PathId, Conn>,
    sleep: Pin<Box<Sleep>>,
    deadline: Option<Instant>,
    events: broadcast::Sender<Event>,
    closed: watch::Sender<Option<SessionError>>,
    /// Once ended: why, and until when the `Close` frames may be written.
    ending: Option<(SessionError, Instant)>,
}

impl Future for Driver {
    type Output = SessionError;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SessionError> {
        let this = &mut *self;
        if this.ending.is_some() {
            return this.poll_closing(cx);
        }
        for _ in 0..TURNS_PER_POLL {
            match this.turn(cx) {
                Turn::Idle => return Poll::Pending,
                Turn::Busy => {}
                Turn::Ended(err) => {
                    this.begin_closing(err);
                    return this.poll_closing(cx);
                }
            }
        }
        // Still work to do: let other tasks run first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

enum Turn {
    /// Nothing more to do until a waker fires.
    Idle,
    /// Something moved; go round again.
    Busy,
    Ended(SessionError),
}

impl Driver {
    /// Reads every path, lets the machine decide, writes every path.
    fn turn(&mut self, cx: &mut Context<'_>) -> Turn {
        let mut inputs = Vec::new();
        let mut busy = self.read_all(cx, &mut inputs);
        {
            let shared = self.shared.clone();
            let mut sh = lock(&shared);
            sh.driver = Some(cx.waker().clone());
            let now = now();
            if let Some(err) = self.decide(&mut sh, inputs, now) {
                return Turn::Ended(err);
            }
            self.fill(&mut sh.machine, now);
            busy |= self.arm_timer(&sh.machine, cx);
            sh.wake_app();
        }
        let failures = self.write_all(cx, &mut busy);
        if !failures.is_empty() {
            let mut sh = lock(&self.shared);
            for (path, reason) in failures {
                sh.machine.remove_path(path, reason, now());
            }
            busy = true;
        }
        if busy {
            Turn::Busy
        } else {
            Turn::Idle
        }
    }

    /// Feeds what the paths brought, takes new paths and commands, runs the
    /// machine's timers and handles its events. Returns why the session
    /// ended, if it did.
    fn decide(&mut self, sh: &mut Shared, inputs: Vec<(PathId, Input)>, now: std::time::Instant) -> Option<SessionError> {
        let machine = &mut sh.machine;
        for (path, input) in inputs {
            match input {
                Input::Frame(frame) => machine.on_frame(path, frame, now),
                Input::Corrupt => machine.on_corrupt(path, now),
                Input::Closed(reason) => machine.remove_path(path, reason, now),
            }
        }
        // A path the machine let go of loses its connection now, before a
        // replacement for it is taken.
        self.handle_events(machine);
        if let Some(reason) = sh.end_requested.take() {
            machine.fail(reason);
        }
        if sh.close_requested {
            machine.close();
        }
        for Incoming { path, conn, on_close } in sh.incoming.drain(..) {
            // A path that is re-admitted replaces its old connection.
            self.conns.remove(&path);
            let (conn, reliable) = Conn::new(conn, on_close);
            self.conns.insert(path, conn);
            machine.add_path(path, reliable, now);
        }
        if machine.poll_timeout().is_some_and(|t| t <= now) {
            machine.handle_timeout(now);
        }
        if let Some(count) = machine.poll_cookie_request() {
            if let Some((jar, ttl)) = &self.jar {
                let cookies = {
                    let mut jar = jar.lock().expect("cookie jar lock");
                    (0..count).map(|_| jar.issue(self.id, *ttl, now)).collect()
                };
                machine.grant_cookies(cookies, *ttl);
            }
        }
        self.handle_events(machine);
        machine.poll_end(now)
    }

    /// Logs and publishes the machine's events; a path the machine let go
    /// of loses its connection.
    fn handle_events(&mut self, machine: &mut Machine) {
        while let Some(event) = machine.poll_event() {
            let session = hex(&self.id);
            match &event {
                Event::PathDown { path, reason } => {
                    tracing::info!(%session, path, %reason, "path down");
                    self.conns.remove(path);
                }
                Event::PathUp { path, readmitted } => tracing::info!(%session, path, readmitted, "path up"),
                Event::Mismatch { path, offset } => tracing::warn!(%session, path, offset, "copies differ"),
                Event::Corrupt { path } => tracing::warn!(%session, path, "corrupt frame discarded (CRC-32C mismatch)"),
                Event::LatentError { path, behind } => {
                    tracing::warn!(%session, path, behind, "path is up but not carrying data")
                }
                // Already logged (INFO) by the registry that ended it.
                Event::Failed(err @ SessionError::Superseded { .. }) => tracing::debug!(%session, %err, "session ended"),
                Event::Failed(err) => tracing::warn!(%session, %err, "session failed"),
            }
            let _ = self.events.send(event);
        }
    }

    /// Hands every path that has written all it had the frames the machine
    /// has for it now.
    fn fill(&mut self, machine: &mut Machine, now: std::time::Instant) {
        for (&path, conn) in self.conns.iter_mut() {
            if !conn.idle() || !machine.wants_transmit(path, now) {
                continue;
            }
            let budget = conn.budget();
            machine.poll_transmit(path, now, &mut conn.out, budget);
            if let Transport::Messages { mtu, messages, .. } = &mut conn.transport {
                let mut batch = conn.out.take_all();
                while !batch.is_empty() {
                    let cut = frames_within(&batch, *mtu);
                    messages.push_back(batch.split_to(cut).freeze());
                }
            }
        }
    }

    /// Sets the timer to the machine's next deadline; true if it is due.
    fn arm_timer(&mut self, machine: &Machine, cx: &mut Context<'_>) -> bool {
        let conns = &self.conns;
        let next = machine.poll_timeout_with(|id| conns.get(&id).is_some_and(Conn::idle)).map(Instant::from_std);
        let Some(t) = next else { return false };
        if self.deadline != Some(t) {
            self.deadline = Some(t);
            self.sleep.as_mut().reset(t);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    /// Reads every path until its transport has nothing more (or its share
    /// of this turn is used). True if anything was read.
    fn read_all(&mut self, cx: &mut Context<'_>, inputs: &mut Vec<(PathId, Input)>) -> bool {
        let mut busy = false;
        for (&path, conn) in self.conns.iter_mut() {
            if conn.read_done {
                continue;
            }
            for _ in 0..READS_PER_TURN {
                let read = match &mut conn.transport {
                    Transport::Stream { io, read_buf, .. } => read_stream(io, read_buf, self.max_frame, cx, path, inputs),
                    Transport::Messages { rx, .. } => read_message(rx, self.max_frame, cx, path, inputs),
                };
                match read {
                    Read::Pending => break,
                    Read::Some => busy = true,
                    Read::Done => {
                        conn.read_done = true;
                        busy = true;
                        break;
                    }
                }
            }
        }
        busy
    }

    /// Writes what every path has queued until its transport would block.
    /// Sets `busy` when a path emptied its queue (it may take more now).
    /// Returns the paths whose transport failed.
    fn write_all(&mut self, cx: &mut Context<'_>, busy: &mut bool) -> Vec<(PathId, String)> {
        let mut failures = Vec::new();
        for (&path, conn) in self.conns.iter_mut() {
            let had = !conn.idle();
            if let Err(reason) = write_conn(conn, cx) {
                failures.push((path, reason));
                continue;
            }
            *busy |= had && conn.idle();
        }
        failures
    }

    /// The session is over: publish why (before the application sees the
    /// stream end), then queue a `Close` on every path still open.
    fn begin_closing(&mut self, err: SessionError) {
        {
            let mut sh = lock(&self.shared);
            let _ = self.closed.send(Some(err.clone()));
            sh.ended = Some(err.clone());
            sh.incoming.clear();
            sh.wake_app();
        }
        let close = Frame::Control(control::close(&err));
        for conn in self.conns.values_mut() {
            use crate::frame::FrameSink;
            conn.out.put_frame(&close);
            if let Transport::Messages { messages, .. } = &mut conn.transport {
                messages.push_back(conn.out.take_all().freeze());
            }
        }
        let until = Instant::now() + CLOSE_FLUSH;
        self.sleep.as_mut().reset(until);
        self.ending = Some((err, until));
    }

    /// Writes the `Close` frames, then lets go of every path.
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<SessionError> {
        self.conns.retain(|_, conn| write_conn(conn, cx).is_ok() && !conn.idle());
        let timed_out = self.sleep.as_mut().poll(cx).is_ready();
        if self.conns.is_empty() || timed_out {
            self.conns.clear();
            let (err, _) = self.ending.take().expect("closing");
            return Poll::Ready(err);
        }
        Poll::Pending
    }
}

enum Read {
    /// Nothing more now (the waker is registered).
    Pending,
    /// Something was read; there may be more.
    Some,
    /// The path will bring nothing more.
    Done,
}

/// One read of a byte stream into its buffer, and the frames it completed.
/// A corrupt frame is reported after the good ones before it and ends the
/// reading: on a byte stream nothing after it can be framed with certainty.
fn read_stream(
    io: &mut Box<dyn PathIo>,
    buf: &mut BytesMut,
    max_frame: usize,
    cx: &mut Context<'_>,
    path: PathId,
    inputs: &mut Vec<(PathId, Input)>,
) -> Read {
    if let Some(end) = decode_stream(buf, max_frame, path, inputs) {
        inputs.push((path, end));
        return Read::Done;
    }
    make_room(buf);
    let n = match tokio_util::io::poll_read_buf(Pin::new(io), cx, buf) {
        Poll::Pending => {
            if buf.is_empty() && buf.capacity() > READ_KEEP {
                *buf = BytesMut::new();
            }
            return Read::Pending;
        }
        Poll::Ready(Ok(n)) => n,
        Poll::Ready(Err(e)) => {
            inputs.push((path, Input::Closed(format!("read failed: {e}"))));
            return Read::Done;
        }
    };
    if n == 0 {
        inputs.push((path, Input::Closed("closed by peer".into())));
        return Read::Done;
    }
    if let Some(end) = decode_stream(buf, max_frame, path, inputs) {
        inputs.push((path, end));
        return Read::Done;
    }
    Read::Some
}

/// Makes room for the next read: [`READ_MIN`] in an empty buffer;
/// otherwise, when there is no room for the rest of the frame begun or
/// less than [`READ_MIN`] free, [`READ_ROOM`] more.
fn make_room(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() < READ_MIN {
        buf.reserve(READ_MIN);
        return;
    }
    let missing = Frame::missing(buf);
    if buf.capacity() - buf.len() < missing.max(READ_MIN) {
        buf.reserve(missing + READ_ROOM);
    }
}

/// Decodes the whole frames in `buf`; returns what ends the reading, if a
/// frame does.
fn decode_stream(buf: &mut BytesMut, max_frame: usize, path: PathId, inputs: &mut Vec<(PathId, Input)>) -> Option<Input> {
    loop {
        match Frame::decode(buf, max_frame) {
            Ok(Some(frame)) => inputs.push((path, Input::Frame(frame))),
            Ok(None) => return None,
            Err(e) if e.is_corrupt() => return Some(Input::Corrupt),
            Err(e) => return Some(Input::Closed(format!("bad frame: {e}"))),
        }
    }
}

/// One message of a message path: decoded whole; a message that is not a
/// sequence of complete frames is dropped (the next one may be fine). A
/// corrupt frame is reported; the intact frames before it are kept and the
/// rest of that message is dropped (its framing is in doubt).
fn read_message(
    rx: &mut mpsc::Receiver<Bytes>,
    max_frame: usize,
    cx: &mut Context<'_>,
    path: PathId,
    inputs: &mut Vec<(PathId, Input)>,
) -> Read {
    let msg = match rx.poll_recv(cx) {
        Poll::Pending => return Read::Pending,
        Poll::Ready(None) => {
            inputs.push((path, Input::Closed("transport closed".into())));
            return Read::Done;
        }
        Poll::Ready(Some(msg)) => msg,
    };
    let mut buf = BytesMut::from(&msg[..]);
    let mut frames = Vec::new();
    let outcome = loop {
        match Frame::decode(&mut buf, max_frame) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) if buf.is_empty() => break Ok(()),
            Ok(None) => break Err(false),
            Err(e) => break Err(e.is_corrupt()),
        }
    };
    match outcome {
        Err(false) => tracing::debug!(path, "malformed message dropped"),
        _ => inputs.extend(frames.into_iter().map(|f| (path, Input::Frame(f)))),
    }
    if outcome == Err(true) {
        inputs.push((path, Input::Corrupt));
    }
    Read::Some
}

/// Writes a path's queue until it is empty or the transport would block.
fn write_conn(conn: &mut Conn, cx: &mut Context<'_>) -> Result<(), String> {
    match &mut conn.transport {
        Transport::Stream { io, unflushed, .. } => write_stream(io, &mut conn.out, unflushed, cx),
        Transport::Messages { tx, messages, .. } => write_messages(tx, messages, cx),
    }
}

fn write_stream(io: &mut Box<dyn PathIo>, out: &mut Segments, unflushed: &mut bool, cx: &mut Context<'_>) -> Result<(), String> {
    while !out.is_empty() {
        let mut slots = [IoSlice::new(&[]); IOV_MAX];
        let n = out.io_slices(&mut slots);
        match Pin::new(&mut *io).poll_write_vectored(cx, &slots[..n]) {
            Poll::Pending => return Ok(()),
            Poll::Ready(Ok(0)) => return Err("write failed: the transport took no bytes".into()),
            Poll::Ready(Ok(k)) => {
                out.advance(k);
                *unflushed = true;
            }
            Poll::Ready(Err(e)) => return Err(format!("write failed: {e}")),
        }
    }
    if *unflushed {
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => *unflushed = false,
            Poll::Ready(Err(e)) => return Err(format!("write failed: {e}")),
        }
    }
    Ok(())
}

fn write_messages(tx: &mut PollSender<Bytes>, messages: &mut VecDeque<Bytes>, cx: &mut Context<'_>) -> Result<(), String> {
    while !messages.is_empty() {
        match tx.poll_reserve(cx) {
            Poll::Pending => return Ok(()),
            Poll::Ready(Err(_)) => return Err("transport closed".into()),
            Poll::Ready(Ok(())) => {
                let msg = messages.pop_front().expect("not empty");
                tx.send_item(msg).map_err(|_| "transport closed".to_string())?;
            }
        }
    }
    Ok(())
}

/// Length of the longest run of whole frames at the start of `buf` that
/// fits in `mtu` (at least one frame).
fn frames_within(buf: &[u8], mtu: usize) -> usize {
    let mut at = 0;
    while at + crate::frame::HEADER_LEN <= buf.len() {
        let len = u32::from_be_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]) as usize;
        let next = at + crate::frame::HEADER_LEN + len;
        if next > mtu && at > 0 {
            break;
        }
        at = next;
    }
    at.min(buf.len()).max(1)
}

/// Lowercase hex, for ids in logs and statistics.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session seen as a byte stream (HTTP/2 runs over it). Reads and
/// writes go straight into the session's machine, under its lock.
pub struct SessionStream {
    shared: SharedRef,
    write_closed: bool,
}

impl AsyncRead for SessionStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut sh = lock(&self.shared);
        if let Some(data) = sh.machine.take_delivered(buf.remaining()) {
            buf.put_slice(&data);
            // The peer learns of it (ACK `delivered`), freeing its window.
            sh.wake_driver();
            return Poll::Ready(Ok(()));
        }
        if sh.machine.at_eof() || sh.ended.is_some() {
            return Poll::Ready(Ok(()));
        }
        sh.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl SessionStream {
    /// Hands up to the send window's room of `bufs` to the machine.
    fn write_bufs(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        let mut sh = lock(&self.shared);
        if self.write_closed || sh.ended.is_some() || sh.machine.failed().is_some() {
            return Poll::Ready(Err(broken_pipe()));
        }
        let room = sh.machine.send_capacity();
        if room == 0 {
            sh.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(total);
        let mut data = BytesMut::with_capacity(n);
        for b in bufs {
            let take = (n - data.len()).min(b.len());
            data.extend_from_slice(&b[..take]);
        }
        sh.machine.push(data.freeze());
        sh.wake_driver();
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_bufs(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        self.write_bufs(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write_closed = true;
        let mut sh = lock(&self.shared);
        sh.machine.shutdown(now());
        sh.wake_driver();
        Poll::Ready(Ok(()))
    }
}

impl Drop for SessionStream {
    fn drop(&mut self) {
        let mut sh = lock(&self.shared);
        sh.machine.shutdown(now());
        sh.machine.reader_closed();
        sh.wake_driver();
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "session ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffer_grows_past_the_rest_of_its_begun_frame() {
        let mut wire = BytesMut::new();
        for _ in 0..2 {
            Frame::encode_data(&mut wire, 0, &[1u8; 64 * 1024], false);
        }
        let half = wire.len() - 32 * 1024;
        let mut buf = BytesMut::from(&wire[..half]);
        // The first frame leaves as a shared slice and stays alive, as the
        // machine keeps it: the buffer cannot reuse its front.
        let first = Frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(Frame::missing(&buf), 32 * 1024);
        make_room(&mut buf);
        assert!(buf.capacity() - buf.len() >= 32 * 1024 + READ_ROOM);
        buf.extend_from_slice(&wire[half..]);
        assert!(matches!(Frame::decode(&mut buf, 1 << 20).unwrap(), Some(Frame::Data { .. })));
        drop(first);
    }

    #[test]
    fn a_read_buffer_with_room_is_left_alone_and_a_fresh_one_is_small() {
        let mut buf = BytesMut::with_capacity(READ_MIN + 1);
        let before = buf.capacity();
        make_room(&mut buf);
        assert_eq!(buf.capacity(), before);
        let mut fresh = BytesMut::new();
        make_room(&mut fresh);
        assert!((READ_MIN..READ_KEEP).contains(&fresh.capacity()), "{}", fresh.capacity());
    }

    /// A transport with nothing to read.
    struct Idle;

    impl AsyncRead for Idle {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Idle {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn an_idle_path_lets_a_large_empty_buffer_go() {
        let mut io: Box<dyn PathIo> = Box::new(Idle);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut inputs = Vec::new();
        let mut buf = BytesMut::with_capacity(READ_ROOM);
        assert!(matches!(read_stream(&mut io, &mut buf, 1 << 20, &mut cx, 0, &mut inputs), Read::Pending));
        assert_eq!(buf.capacity(), 0, "an idle path kept {} bytes", buf.capacity());
        // A small buffer is kept: no allocation per turn on a quiet path.
        let mut small = BytesMut::new();
        assert!(matches!(read_stream(&mut io, &mut small, 1 << 20, &mut cx, 0, &mut inputs), Read::Pending));
        let kept = small.capacity();
        assert!(kept >= READ_MIN);
        assert!(matches!(read_stream(&mut io, &mut small, 1 << 20, &mut cx, 0, &mut inputs), Read::Pending));
        assert_eq!(small.capacity(), kept);
        assert!(inputs.is_empty());
    }
}
