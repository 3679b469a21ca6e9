//! Runs one session state machine on tokio.
//!
//! One task owns the [`Machine`] (so no lock is taken per frame). Each path
//! has a reader task, which decodes whole read buffers into batches of
//! frames. Writing a stream path is done by the session task itself while
//! the socket accepts bytes without blocking (no task hop on the hot path);
//! when a write would block, the rest of that batch goes to a short-lived
//! flush task that owns the write half until it is done, and the path gets
//! nothing more meanwhile. So a slow or stuck path just falls behind (its
//! cursor lags; permissive mode skips what the peer already has) and never
//! blocks the session or the other paths. Message paths (NKN) hand batches
//! to a writer task.
//!
//! The application side is [`SessionStream`], an `AsyncRead + AsyncWrite`
//! over two bounded channels: the write channel is only drained while the
//! send window has room and the read channel is only filled while the
//! application keeps up, which is how back-pressure crosses the session.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::PollSender;

use super::machine::{Event, Machine, PathId, PathStats};
use super::{Mode, SessionConfig, SessionError};
use crate::cookie::{CookieJar, SessionId};
use crate::frame::Frame;
use crate::proto::resi;

/// Bytes of frames written to a path at once.
const BATCH_BUDGET: usize = 256 * 1024;
/// Batches a message path's writer task may have queued.
const WRITER_QUEUE: usize = 2;
/// Chunks buffered between the application and the session task.
const APP_CHANNEL: usize = 64;
/// After the application closed, how long to wait for the peer's
/// acknowledgements before ending the session anyway.
const LINGER: Duration = Duration::from_secs(2);

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
    /// Messages to send to the peer.
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

/// Merge cookies held by the dialling side.
pub struct Wallet {
    cookies: VecDeque<Bytes>,
    issued: std::time::Instant,
    ttl: Duration,
    target: usize,
    refresh_asked: Option<std::time::Instant>,
}

impl Wallet {
    pub fn new(cookies: Vec<Bytes>, ttl: Duration) -> Wallet {
        let target = cookies.len().max(1);
        Wallet { cookies: cookies.into(), issued: std::time::Instant::now(), ttl, target, refresh_asked: None }
    }
    pub fn take(&mut self) -> Option<Bytes> {
        self.cookies.pop_front()
    }
    pub fn add(&mut self, cookie: Bytes) {
        self.cookies.push_back(cookie);
    }
    fn replace(&mut self, cookies: Vec<Bytes>, ttl: Duration) {
        self.cookies = cookies.into();
        self.issued = std::time::Instant::now();
        self.ttl = ttl;
        self.refresh_asked = None;
    }
    fn needs_refresh(&self, now: std::time::Instant) -> bool {
        let stale = now >= self.issued + self.ttl / 2 || self.cookies.len() < self.target;
        let asked_recently = self.refresh_asked.is_some_and(|t| now < t + Duration::from_secs(2));
        stale && !asked_recently
    }
}

/// Which end of the session this is: the acceptor answers cookie requests,
/// the dialler keeps its wallet fresh.
pub enum Role {
    Acceptor { jar: Arc<Mutex<CookieJar>>, cookie_ttl: Duration },
    Dialer { wallet: Arc<Mutex<Wallet>> },
}

enum Command {
    AddPath { path: PathId, conn: NewPath, on_close: Option<oneshot::Sender<()>> },
    Close,
    Stats(oneshot::Sender<SessionStats>),
}

enum PathMsg {
    Frames { path: PathId, gen: u64, frames: Vec<Frame> },
    /// A frame failed its CRC-32C; the reader discarded it.
    Corrupt { path: PathId, gen: u64 },
    WriteDone { path: PathId, gen: u64 },
    /// A flush task finished and hands the write half back.
    Flushed { path: PathId, gen: u64, half: StreamWriter },
    Closed { path: PathId, gen: u64, reason: String },
}

/// Control and observation of a running session.
#[derive(Clone)]
pub struct SessionHandle {
    id: SessionId,
    cmd: mpsc::UnboundedSender<Command>,
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
        let _ = self.cmd.send(Command::Close);
    }

    /// Hands a connected path to the session. `on_close` fires when the
    /// session lets go of it (the path died or the session ended).
    pub fn add_path(&self, path: PathId, conn: impl Into<NewPath>, on_close: Option<oneshot::Sender<()>>) {
        let _ = self.cmd.send(Command::AddPath { path, conn: conn.into(), on_close });
    }

    /// A snapshot of the session's counters (None once it has ended).
    pub async fn stats(&self) -> Option<SessionStats> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Command::Stats(tx)).ok()?;
        rx.await.ok()
    }

    /// Path and session events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// Starts a session task; returns the application's stream and a handle.
pub fn spawn(cfg: SessionConfig, role: Role, id: SessionId) -> (SessionStream, SessionHandle) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (path_tx, path_rx) = mpsc::channel(256);
    let (in_tx, in_rx) = mpsc::channel(APP_CHANNEL);
    let (out_tx, out_rx) = mpsc::channel(APP_CHANNEL);
    let (closed_tx, closed_rx) = watch::channel(None);
    let (events_tx, _) = broadcast::channel(256);
    let driver = Driver {
        machine: Machine::new(cfg.clone(), Instant::now().into_std()),
        cfg,
        role,
        id,
        conns: HashMap::new(),
        next_gen: 0,
        path_tx,
        path_rx,
        cmd_rx,
        app_in: Some(in_rx),
        app_out: Some(out_tx),
        events: events_tx.clone(),
        linger_until: None,
    };
    tokio::spawn(async move {
        let reason = driver.run(closed_tx).await;
        tracing::debug!(%reason, "session ended");
    });
    let stream = SessionStream { tx: PollSender::new(in_tx), rx: out_rx, pending: Bytes::new() };
    let handle = SessionHandle { id, cmd: cmd_tx, closed: closed_rx, events: events_tx };
    (stream, handle)
}

type StreamWriter = tokio::io::WriteHalf<Box<dyn PathIo>>;

/// How a path's frames leave.
enum Writer {
    /// The session task writes the stream itself; `None` while a flush task
    /// holds the half.
    Direct(Option<StreamWriter>),
    /// Batches go to a writer task (message transports).
    Task { tx: mpsc::Sender<BytesMut>, queued: usize },
}

struct Conn {
    gen: u64,
    writer: Writer,
    reader: JoinHandle<()>,
    /// The writer task or the running flush task, if any: a write blocked
    /// on a black-holed socket must not outlive the path.
    write_task: Option<JoinHandle<()>>,
    on_close: Option<oneshot::Sender<()>>,
}

struct Driver {
    machine: Machine,
    cfg: SessionConfig,
    role: Role,
    id: SessionId,
    conns: HashMap<PathId, Conn>,
    next_gen: u64,
    path_tx: mpsc::Sender<PathMsg>,
    path_rx: mpsc::Receiver<PathMsg>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    app_in: Option<mpsc::Receiver<Bytes>>,
    app_out: Option<mpsc::Sender<Bytes>>,
    events: broadcast::Sender<Event>,
    linger_until: Option<Instant>,
}

/// What ended the loop.
enum Exit {
    Failed(SessionError),
    Done,
}

impl Driver {
    /// Runs until the session ends. The reason is published on `closed`
    /// *before* the application's channels close, so whoever sees the
    /// stream end can already tell why (a mismatch makes calls `DATA_LOSS`).
    async fn run(mut self, closed: watch::Sender<Option<SessionError>>) -> SessionError {
        let reason = loop {
            if let Some(exit) = self.turn() {
                break exit;
            }
            if let Err(exit) = self.wait().await {
                break exit;
            }
        };
        let err = match reason {
            Exit::Failed(e) => e,
            Exit::Done => SessionError::Closed,
        };
        let _ = closed.send(Some(err.clone()));
        self.app_in = None;
        self.app_out = None;
        self.send_close(&err);
        self.shutdown_paths();
        err
    }

    /// Does all the work that is possible without waiting.
    fn turn(&mut self) -> Option<Exit> {
        let now = Instant::now().into_std();
        self.pull_app_data();
        self.deliver();
        self.refresh_cookies(now);
        if let Some(exit) = self.handle_events() {
            return Some(exit);
        }
        self.transmit(now);
        self.check_finished()
    }

    async fn wait(&mut self) -> Result<(), Exit> {
        let deadline = self.next_deadline();
        let can_take = self.app_in.is_some() && self.machine.send_capacity() > 0;
        let can_deliver = self.app_out.is_some() && self.machine.has_deliverable();
        let app_out = self.app_out.clone();
        tokio::select! {
            biased;
            Some(cmd) = self.cmd_rx.recv() => self.on_command(cmd)?,
            Some(msg) = self.path_rx.recv() => {
                self.on_path_msg(msg);
                // Take whatever else is already queued before transmitting,
                // so replies and acks leave in one batch.
                for _ in 0..64 {
                    match self.path_rx.try_recv() {
                        Ok(msg) => self.on_path_msg(msg),
                        Err(_) => break,
                    }
                }
            }
            data = recv_opt(&mut self.app_in), if can_take => match data {
                Some(data) => self.machine.push(data),
                None => self.app_in_closed(),
            },
            permit = reserve_opt(&app_out), if can_deliver => match permit {
                Some(permit) => {
                    if let Some(data) = self.machine.take_delivered(64 * 1024) {
                        permit.send(data);
                    }
                }
                None => self.app_out = None,
            },
            _ = sleep_until_opt(deadline) => {
                self.machine.handle_timeout(Instant::now().into_std());
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.machine.poll_timeout().map(Instant::from_std);
        if let Some(t) = self.linger_until {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        if matches!(self.role, Role::Dialer { .. }) {
            let t = Instant::now() + Duration::from_secs(1);
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    fn on_command(&mut self, cmd: Command) -> Result<(), Exit> {
        match cmd {
            Command::AddPath { path, conn, on_close } => self.add_conn(path, conn, on_close),
            Command::Close => return Err(Exit::Done),
            Command::Stats(tx) => {
                let _ = tx.send(self.stats());
            }
        }
        Ok(())
    }

    fn on_path_msg(&mut self, msg: PathMsg) {
        let now = Instant::now().into_std();
        match msg {
            PathMsg::Frames { path, gen, frames } => {
                if self.current(path, gen) {
                    for frame in frames {
                        self.machine.on_frame(path, frame, now);
                    }
                }
            }
            PathMsg::Corrupt { path, gen } => {
                if self.current(path, gen) {
                    self.machine.on_corrupt(path, now);
                }
            }
            PathMsg::WriteDone { path, gen } => {
                if let Some(conn) = self.conns.get_mut(&path).filter(|c| c.gen == gen) {
                    if let Writer::Task { queued, .. } = &mut conn.writer {
                        *queued = queued.saturating_sub(1);
                    }
                }
            }
            PathMsg::Flushed { path, gen, half } => {
                if let Some(conn) = self.conns.get_mut(&path).filter(|c| c.gen == gen) {
                    conn.writer = Writer::Direct(Some(half));
                }
            }
            PathMsg::Closed { path, gen, reason } => {
                if self.current(path, gen) {
                    self.machine.remove_path(path, reason, now);
                }
            }
        }
    }

    fn current(&self, path: PathId, gen: u64) -> bool {
        self.conns.get(&path).is_some_and(|c| c.gen == gen)
    }

    fn add_conn(&mut self, path: PathId, conn: NewPath, on_close: Option<oneshot::Sender<()>>) {
        self.drop_conn(path);
        self.next_gen += 1;
        let gen = self.next_gen;
        let max_frame = self.cfg.max_frame;
        let events = self.path_tx.clone();
        let mut write_task = None;
        let (reader, writer, reliable) = match conn {
            NewPath::Stream(conn) => {
                let (rd, wr) = tokio::io::split(conn.io);
                let reader = tokio::spawn(read_path(path, gen, rd, conn.read_buf, max_frame, events));
                (reader, Writer::Direct(Some(wr)), conn.reliable)
            }
            NewPath::Messages(conn) => {
                let (wtx, wrx) = mpsc::channel(WRITER_QUEUE);
                write_task = Some(tokio::spawn(write_messages(path, gen, conn.tx, conn.mtu, wrx, events.clone())));
                let reader = tokio::spawn(read_messages(path, gen, conn.rx, max_frame, events));
                (reader, Writer::Task { tx: wtx, queued: 0 }, false)
            }
        };
        self.conns.insert(path, Conn { gen, writer, reader, write_task, on_close });
        self.machine.add_path(path, reliable, Instant::now().into_std());
    }

    fn drop_conn(&mut self, path: PathId) {
        if let Some(conn) = self.conns.remove(&path) {
            conn.reader.abort();
            // Dropping the write half (or the writer task's sender) closes
            // the path once what was queued is written; a write still
            // blocked after a moment is abandoned.
            drop(conn.writer);
            if let Some(task) = conn.write_task {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    task.abort();
                });
            }
            if let Some(tx) = conn.on_close {
                let _ = tx.send(());
            }
        }
    }

    fn pull_app_data(&mut self) {
        while self.machine.send_capacity() > 0 {
            let Some(rx) = self.app_in.as_mut() else { return };
            match rx.try_recv() {
                Ok(data) => self.machine.push(data),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.app_in_closed();
                    return;
                }
            }
        }
    }

    fn app_in_closed(&mut self) {
        self.app_in = None;
        self.machine.finish();
        self.linger_until = Some(Instant::now() + LINGER);
    }

    fn deliver(&mut self) {
        while self.machine.has_deliverable() {
            let Some(tx) = self.app_out.as_ref() else { return };
            let result = tx.try_reserve().map(|permit| {
                if let Some(data) = self.machine.take_delivered(64 * 1024) {
                    permit.send(data);
                }
            });
            match result {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.app_out = None;
                    return;
                }
            }
        }
        if self.machine.at_eof() {
            // The peer finished: the application reads end-of-stream.
            self.app_out = None;
        }
    }

    fn handle_events(&mut self) -> Option<Exit> {
        while let Some(event) = self.machine.poll_event() {
            match &event {
                Event::PathDown { path, reason } => {
                    tracing::info!(session = %hex(&self.id), path, %reason, "path down");
                    self.drop_conn(*path);
                }
                Event::PathUp { path, readmitted } => {
                    tracing::info!(session = %hex(&self.id), path, readmitted, "path up");
                }
                Event::Mismatch { path, offset } => {
                    tracing::warn!(session = %hex(&self.id), path, offset, "copies differ");
                }
                Event::Corrupt { path } => {
                    tracing::warn!(session = %hex(&self.id), path, "corrupt frame discarded (CRC-32C mismatch)");
                }
                Event::LatentError { path, behind } => {
                    tracing::warn!(session = %hex(&self.id), path, behind, "path is up but not carrying data");
                }
                Event::Control(body) => {
                    if let Some(exit) = self.on_control(body.clone()) {
                        return Some(exit);
                    }
                    continue;
                }
                Event::Failed(err) => {
                    tracing::warn!(session = %hex(&self.id), %err, "session failed");
                    let _ = self.events.send(event.clone());
                    return Some(Exit::Failed(err.clone()));
                }
            }
            let _ = self.events.send(event);
        }
        None
    }

    fn on_control(&mut self, body: Bytes) -> Option<Exit> {
        let Ok(control) = resi::Control::decode(body) else {
            tracing::warn!("undecodable CONTROL frame ignored");
            return None;
        };
        match (control.msg, &self.role) {
            (Some(resi::control::Msg::CookieRequest(req)), Role::Acceptor { jar, cookie_ttl }) => {
                let now = std::time::Instant::now();
                let count = req.count.clamp(1, 16);
                let cookies = {
                    let mut jar = jar.lock().expect("cookie jar lock");
                    (0..count).map(|_| jar.issue(self.id, *cookie_ttl, now)).collect()
                };
                let grant = resi::CookieGrant { cookies, cookie_ttl_ms: cookie_ttl.as_millis() as u32 };
                let msg = resi::Control { msg: Some(resi::control::Msg::CookieGrant(grant)) };
                self.machine.queue_control(msg.encode_to_vec().into());
            }
            (Some(resi::control::Msg::CookieGrant(grant)), Role::Dialer { wallet }) => {
                let ttl = Duration::from_millis(grant.cookie_ttl_ms as u64);
                wallet.lock().expect("wallet lock").replace(grant.cookies, ttl);
            }
            (Some(resi::control::Msg::Close(close)), _) => {
                let reason = close.reason.unwrap_or_default();
                self.deliver();
                let err = match crate::grpc::Code::from_i32(reason.code) {
                    crate::grpc::Code::DataLoss => SessionError::PeerMismatch(reason.message),
                    _ => SessionError::PeerClosed(reason.message),
                };
                return Some(Exit::Failed(err));
            }
            _ => tracing::debug!("CONTROL message not for this side ignored"),
        }
        None
    }

    fn refresh_cookies(&mut self, now: std::time::Instant) {
        let Role::Dialer { wallet } = &self.role else { return };
        if self.machine.live_count() == 0 {
            return;
        }
        let mut wallet = wallet.lock().expect("wallet lock");
        if wallet.needs_refresh(now) {
            wallet.refresh_asked = Some(now);
            let req = resi::CookieRequest { count: wallet.target as u32 };
            let msg = resi::Control { msg: Some(resi::control::Msg::CookieRequest(req)) };
            self.machine.queue_control(msg.encode_to_vec().into());
        }
    }

    fn transmit(&mut self, now: std::time::Instant) {
        let mut failed = vec![];
        for (&path, conn) in self.conns.iter_mut() {
            while self.machine.wants_transmit(path, now) {
                let ready = match &conn.writer {
                    Writer::Direct(half) => half.is_some(),
                    Writer::Task { queued, .. } => *queued < WRITER_QUEUE,
                };
                if !ready {
                    break;
                }
                let mut batch = BytesMut::with_capacity(16 * 1024);
                if !self.machine.poll_transmit(path, now, &mut batch, BATCH_BUDGET) {
                    break;
                }
                match &mut conn.writer {
                    Writer::Direct(slot) => match write_now(slot.as_mut().expect("ready"), &batch) {
                        Ok(n) if n == batch.len() => {}
                        Ok(n) => {
                            // The socket is full: a flush task finishes the
                            // batch and gives the half back.
                            let half = slot.take().expect("ready");
                            let rest = batch.split_off(n);
                            let task = tokio::spawn(flush(path, conn.gen, half, rest, self.path_tx.clone()));
                            conn.write_task = Some(task);
                        }
                        Err(e) => {
                            failed.push((path, format!("write failed: {e}")));
                            break;
                        }
                    },
                    Writer::Task { tx, queued } => match tx.try_send(batch) {
                        Ok(()) => *queued += 1,
                        Err(_) => break,
                    },
                }
            }
        }
        for (path, reason) in failed {
            self.machine.remove_path(path, reason, now);
        }
    }

    fn check_finished(&mut self) -> Option<Exit> {
        let both_closed = self.app_in.is_none() && (self.app_out.is_none() || self.machine.at_eof());
        if both_closed && self.machine.all_acked() {
            return Some(Exit::Done);
        }
        if let Some(t) = self.linger_until {
            if Instant::now() >= t && self.app_out.is_none() {
                return Some(Exit::Done);
            }
        }
        None
    }

    fn stats(&self) -> SessionStats {
        let paths = self
            .machine
            .path_ids()
            .into_iter()
            .map(|path| PathReport {
                path,
                live: self.machine.is_live(path),
                stats: self.machine.path_stats(path).unwrap_or_default(),
            })
            .collect();
        SessionStats {
            session_id: hex(&self.id),
            mode: self.machine.mode(),
            delivered: self.machine.delivered(),
            buffered: self.machine.buffered_bytes(),
            paths,
        }
    }

    /// Tells the peer, on every path still open, that the session is over.
    fn send_close(&mut self, err: &SessionError) {
        let code = match err {
            SessionError::Closed => crate::grpc::Code::Ok,
            SessionError::Mismatch { .. } | SessionError::PeerMismatch(_) => crate::grpc::Code::DataLoss,
            _ => crate::grpc::Code::Aborted,
        };
        let status = resi::Status { code: code as i32, message: err.to_string() };
        let body = resi::Control { msg: Some(resi::control::Msg::Close(resi::Close { reason: Some(status) })) };
        let frame = Frame::Control(body.encode_to_vec().into());
        for conn in self.conns.values_mut() {
            let mut buf = BytesMut::new();
            frame.encode(&mut buf);
            match &mut conn.writer {
                Writer::Direct(Some(half)) => {
                    let _ = write_now(half, &buf);
                }
                Writer::Direct(None) => {}
                Writer::Task { tx, .. } => {
                    let _ = tx.try_send(buf);
                }
            }
        }
    }

    fn shutdown_paths(&mut self) {
        let paths: Vec<PathId> = self.conns.keys().copied().collect();
        for path in paths {
            self.drop_conn(path);
        }
    }
}

async fn recv_opt(rx: &mut Option<mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn reserve_opt(tx: &Option<mpsc::Sender<Bytes>>) -> Option<mpsc::Permit<'_, Bytes>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reads a path: whole buffers are decoded into one batch of frames. A
/// corrupt frame is reported (after the good frames before it) and ends the
/// reading: on a byte stream nothing after it can be framed with certainty.
async fn read_path(
    path: PathId,
    gen: u64,
    mut rd: tokio::io::ReadHalf<Box<dyn PathIo>>,
    mut buf: BytesMut,
    max_frame: usize,
    tx: mpsc::Sender<PathMsg>,
) {
    let reason = loop {
        let mut frames = Vec::new();
        loop {
            match Frame::decode(&mut buf, max_frame) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    if !frames.is_empty() {
                        let _ = tx.send(PathMsg::Frames { path, gen, frames }).await;
                    }
                    let msg = match e.is_corrupt() {
                        true => PathMsg::Corrupt { path, gen },
                        false => PathMsg::Closed { path, gen, reason: format!("bad frame: {e}") },
                    };
                    let _ = tx.send(msg).await;
                    return;
                }
            }
        }
        if !frames.is_empty() && tx.send(PathMsg::Frames { path, gen, frames }).await.is_err() {
            return;
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => break "closed by peer".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    let _ = tx.send(PathMsg::Closed { path, gen, reason }).await;
}

/// Writes as much of `buf` as the stream takes without waiting.
fn write_now(half: &mut StreamWriter, buf: &[u8]) -> io::Result<usize> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut done = 0;
    while done < buf.len() {
        match Pin::new(&mut *half).poll_write(&mut cx, &buf[done..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => done += n,
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(done)
}

/// Finishes writing a batch the socket could not take at once, then hands
/// the write half back to the session task.
async fn flush(path: PathId, gen: u64, mut half: StreamWriter, rest: BytesMut, tx: mpsc::Sender<PathMsg>) {
    match half.write_all(&rest).await {
        Ok(()) => {
            let _ = tx.send(PathMsg::Flushed { path, gen, half }).await;
        }
        Err(e) => {
            let _ = tx.send(PathMsg::Closed { path, gen, reason: format!("write failed: {e}") }).await;
        }
    }
}

/// Reads a message path: each message is decoded whole; a message that is
/// not a sequence of complete frames is dropped (the next one may be fine).
/// A corrupt frame is reported; the intact frames before it are kept and
/// the rest of that message is dropped (its framing is in doubt).
async fn read_messages(path: PathId, gen: u64, mut rx: mpsc::Receiver<Bytes>, max_frame: usize, tx: mpsc::Sender<PathMsg>) {
    while let Some(msg) = rx.recv().await {
        let mut buf = BytesMut::from(&msg[..]);
        let mut frames = Vec::new();
        let mut corrupt = false;
        let complete = loop {
            match Frame::decode(&mut buf, max_frame) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break buf.is_empty(),
                Err(e) => {
                    corrupt = e.is_corrupt();
                    break false;
                }
            }
        };
        if corrupt {
            if !frames.is_empty() && tx.send(PathMsg::Frames { path, gen, frames }).await.is_err() {
                return;
            }
            if tx.send(PathMsg::Corrupt { path, gen }).await.is_err() {
                return;
            }
            continue;
        }
        if !complete {
            tracing::debug!(path, "malformed message dropped");
            continue;
        }
        if !frames.is_empty() && tx.send(PathMsg::Frames { path, gen, frames }).await.is_err() {
            return;
        }
    }
    let _ = tx.send(PathMsg::Closed { path, gen, reason: "transport closed".into() }).await;
}

/// Writes a message path: each batch is cut at frame boundaries into
/// messages of at most `mtu` bytes.
async fn write_messages(
    path: PathId,
    gen: u64,
    out: mpsc::Sender<Bytes>,
    mtu: usize,
    mut rx: mpsc::Receiver<BytesMut>,
    tx: mpsc::Sender<PathMsg>,
) {
    while let Some(mut batch) = rx.recv().await {
        while !batch.is_empty() {
            let cut = frames_within(&batch, mtu);
            if out.send(batch.split_to(cut).freeze()).await.is_err() {
                let _ = tx.send(PathMsg::Closed { path, gen, reason: "transport closed".into() }).await;
                return;
            }
        }
        let _ = tx.send(PathMsg::WriteDone { path, gen }).await;
    }
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

/// The session seen as a byte stream (HTTP/2 runs over it).
pub struct SessionStream {
    tx: PollSender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl AsyncRead for SessionStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(data) => self.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SessionStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        self.tx.send_item(Bytes::copy_from_slice(buf)).map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut joined = BytesMut::with_capacity(total);
        for b in bufs {
            joined.extend_from_slice(b);
        }
        self.tx.send_item(joined.freeze()).map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "session ended")
}
