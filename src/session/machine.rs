//! The session protocol state machine.
//!
//! Like quinn-proto, this has no sockets and no clock: the driver feeds it
//! received frames and the current time, and asks it what to transmit on
//! each path, what to deliver to the application, and when to wake it. So
//! the whole protocol — numbering, acknowledgement, retransmission, strict
//! and permissive delivery, heartbeats, the live-path set — is tested in
//! memory under simulated loss, delay, reordering and corruption.
//!
//! # Sending
//! Application bytes are numbered by their offset in the stream and kept in
//! the send buffer from the peer's delivered acknowledgement (`acked`) up to
//! `end`. Each path has a cursor; transmitting on a path sends
//! `[max(cursor, acked), end)`. A slow path therefore never holds memory:
//! once the peer has the bytes from another path they are freed and the
//! slow path skips them. A lossy path (not `reliable`) goes back to what the
//! peer acknowledged on it when it makes no progress for a retransmission
//! timeout; a reliable path (TCP) is instead declared dead and re-admitted.
//!
//! # Receiving
//! The first copy of each byte becomes the *canonical* copy, kept from
//! `base` to `top`. Every later copy is compared with it. Permissive mode
//! delivers up to `top` (the first copy wins); strict mode delivers only up
//! to the lowest position every live path has reached, so a byte is passed
//! on once every live path carried an identical copy. Canonical bytes are
//! kept below the delivery point only while some live path has yet to pass
//! them (for checking), and never more than one window.
//!
//! # Corrupt frames
//! Every frame carries a CRC-32C; the path reader reports a frame that
//! fails it with [`Machine::on_corrupt`] instead of passing it on, so an
//! altered copy is never compared, delivered or acted upon, and the path
//! that brought it is the one blamed. On a reliable path the byte stream
//! itself can no longer be trusted (a frame boundary may be wrong), so the
//! path is closed at once and re-admission resends; on a lossy path the
//! frame counts as lost (retransmission recovers it) unless the path keeps
//! doing it: [`CORRUPT_LIMIT`] corrupt frames within one dead timeout drop
//! it. The mismatch logic stays for copies that pass the check but differ
//! (an altering peer can recompute a CRC).
//!
//! # CONTROL and cookies
//! CONTROL frames are decided here too ([`super::control`]): a dialler's
//! machine holds its merge cookies and asks for fresh ones before they
//! reach half their lifetime or when it is short of one per path; an
//! acceptor's machine answers a request by asking the driver for that many
//! cookies ([`Machine::poll_cookie_request`]), since only the driver holds
//! the cookie jar. A `Close` from the peer ends the session after what was
//! deliverable then has been read.
//!
//! # Ending
//! The session ends normally once the application closed its sending side,
//! everything sent is acknowledged and the peer's stream has been read to
//! its end (or the reader is gone), or [`LINGER`] after the application
//! closed if the peer does not acknowledge; it fails on a strict mismatch,
//! a resume timeout or the peer's `Close`. [`Machine::poll_end`] says
//! when, and [`control::close`] what to tell the peer.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::control::{self, Received, Wallet};
use super::{Mode, SessionConfig, SessionError};
use crate::frame::{Frame, FrameSink, MAX_DATA_PAYLOAD};

/// A path's name within its session (chosen by the dialling side).
pub type PathId = u32;

/// Corrupt frames within one dead timeout after which a lossy path is
/// dropped (a reliable path is dropped at the first).
pub const CORRUPT_LIMIT: usize = 3;

/// How long an owed ACK may wait for the path's next DATA (or PING, PONG,
/// CONTROL) to ride with (R-6-6). Request and answer then carry each
/// other's acknowledgements: a call costs no ACK of its own, and the ACK
/// never goes out ahead of the data the application is about to send.
pub const ACK_DELAY: Duration = Duration::from_millis(1);

/// After the application closed its sending side, how long to wait for the
/// peer's acknowledgements before ending the session anyway (§8.5).
pub const LINGER: Duration = Duration::from_secs(2);

/// Something the driver or the application should know about.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    PathUp { path: PathId, readmitted: bool },
    PathDown { path: PathId, reason: String },
    /// A copy on `path` differed from the accepted bytes at `offset`.
    Mismatch { path: PathId, offset: u64 },
    /// A frame on `path` failed its CRC-32C and was discarded unused.
    Corrupt { path: PathId },
    /// `path` is up (heartbeats arrive) but has stopped bringing its copies
    /// of the stream: `behind` bytes that other paths brought are missing
    /// on it. In permissive mode redundancy is silently lost; strict mode
    /// drops such a path instead.
    LatentError { path: PathId, behind: u64 },
    Failed(SessionError),
}

/// Counters of one path (what `stats()` reports).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub data_bytes_sent: u64,
    pub retransmitted_bytes: u64,
    pub mismatches: u64,
    /// Frames that failed their CRC-32C (discarded, never used).
    pub corrupt_frames: u64,
    /// Stream bytes this path delivered first.
    pub first_bytes: u64,
    /// Stream bytes this path carried that another path had already brought.
    pub duplicate_bytes: u64,
    /// Stream bytes this path never carried (skipped because the peer had
    /// them from another path, or lost while it was down).
    pub missed_bytes: u64,
    pub latent_errors: u64,
    pub rtt: Option<Duration>,
    pub admissions: u64,
}

struct PathState {
    live: bool,
    reliable: bool,
    // sending
    cursor: u64,
    peer_received: u64,
    last_progress: Instant,
    // receiving
    received: u64,
    reorder: BTreeMap<u64, Bytes>,
    reorder_bytes: usize,
    last_recv: Instant,
    /// Last time `received` advanced, and since when the path has been
    /// behind the canonical copy: together they tell a path that carries
    /// heartbeats but no data.
    last_data: Instant,
    behind_since: Option<Instant>,
    latent_reported: bool,
    next_ping: Instant,
    ack_owed: bool,
    pongs_owed: Vec<u64>,
    fin_sent: bool,
    /// When the recent corrupt frames arrived (lossy paths; at most
    /// `CORRUPT_LIMIT` kept).
    recent_corrupt: VecDeque<Instant>,
    stats: PathStats,
}

impl PathState {
    fn new(reliable: bool, start: u64, now: Instant) -> PathState {
        PathState {
            live: true,
            reliable,
            cursor: start,
            peer_received: start,
            last_progress: now,
            received: 0,
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            last_recv: now,
            last_data: now,
            behind_since: None,
            latent_reported: false,
            next_ping: now,
            ack_owed: true,
            pongs_owed: Vec::new(),
            fin_sent: false,
            recent_corrupt: VecDeque::new(),
            stats: PathStats::default(),
        }
    }
}

/// Chunks of a contiguous byte range, indexed by offset.
#[derive(Default)]
struct ChunkQueue {
    start: u64,
    chunks: VecDeque<(u64, Bytes)>,
    end: u64,
}

impl ChunkQueue {
    fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        let len = data.len() as u64;
        self.chunks.push_back((self.end, data));
        self.end += len;
    }

    /// Drops everything below `to`.
    fn trim(&mut self, to: u64) {
        let to = to.min(self.end);
        while let Some((off, chunk)) = self.chunks.front_mut() {
            let chunk_end = *off + chunk.len() as u64;
            if chunk_end <= to {
                self.chunks.pop_front();
            } else {
                if *off < to {
                    let cut = (to - *off) as usize;
                    *chunk = chunk.slice(cut..);
                    *off = to;
                }
                break;
            }
        }
        self.start = self.start.max(to);
        if self.chunks.is_empty() {
            self.start = self.end.max(self.start);
        }
    }

    fn index_of(&self, offset: u64) -> Option<usize> {
        if offset < self.start || offset >= self.end {
            return None;
        }
        let i = self.chunks.partition_point(|(off, _)| *off <= offset);
        Some(i - 1)
    }

    /// Up to `max` bytes starting at `offset`, without copying.
    fn slice(&self, offset: u64, max: usize) -> Option<Bytes> {
        let i = self.index_of(offset)?;
        let (off, chunk) = &self.chunks[i];
        let from = (offset - off) as usize;
        let to = chunk.len().min(from + max);
        Some(chunk.slice(from..to))
    }

    /// Compares `data` (which starts at `offset`) with the stored bytes it
    /// overlaps; returns the offset of the first differing byte.
    fn first_difference(&self, offset: u64, data: &[u8]) -> Option<u64> {
        let mut pos = offset.max(self.start);
        let stop = (offset + data.len() as u64).min(self.end);
        while pos < stop {
            let i = self.index_of(pos)?;
            let (off, chunk) = &self.chunks[i];
            let from = (pos - off) as usize;
            let n = (chunk.len() - from).min((stop - pos) as usize);
            let ours = &chunk[from..from + n];
            let theirs = &data[(pos - offset) as usize..(pos - offset) as usize + n];
            if ours != theirs {
                let k = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap_or(0);
                return Some(pos + k as u64);
            }
            pos += n as u64;
        }
        None
    }

    /// Replaces the stored bytes at `offset` with `data` (same length).
    fn overwrite(&mut self, offset: u64, data: &[u8]) {
        let mut pos = offset;
        let stop = (offset + data.len() as u64).min(self.end);
        while pos < stop {
            let Some(i) = self.index_of(pos) else { return };
            let (off, chunk) = &mut self.chunks[i];
            let from = (pos - *off) as usize;
            let n = (chunk.len() - from).min((stop - pos) as usize);
            let mut copy = BytesMut::from(&chunk[..]);
            let src = (pos - offset) as usize;
            copy[from..from + n].copy_from_slice(&data[src..src + n]);
            *chunk = copy.freeze();
            pos += n as u64;
        }
    }
}

/// A disagreement in strict mode with three or more live paths, waiting
/// for every live path's vote.
struct Dispute {
    start: u64,
    end: u64,
    dissent: Vec<(PathId, u64, Bytes)>,
}

/// The session state machine.
pub struct Machine {
    cfg: SessionConfig,
    epoch: Instant,
    paths: BTreeMap<PathId, PathState>,
    // sending
    send: ChunkQueue,
    finished: bool,
    // receiving
    canon: ChunkQueue,
    delivered: u64,
    fin_at: Option<u64>,
    disputes: Vec<Dispute>,
    // control frames waiting for a path
    control_out: VecDeque<Bytes>,
    events: VecDeque<Event>,
    no_path_since: Option<Instant>,
    /// Next periodic check of the paths' data progress.
    next_check: Instant,
    failed: Option<SessionError>,
    /// Once failed: how far the application may still read (what was
    /// deliverable when the peer said `Close`; nothing more otherwise).
    drain_end: u64,
    /// The dialler's merge cookies (None at the acceptor).
    wallet: Option<Wallet>,
    /// Acceptor: cookies the peer asked for, to be issued by the driver.
    cookies_wanted: Option<u32>,
    linger_until: Option<Instant>,
    lingered: bool,
    /// When owed ACKs go out even with nothing to ride with (None: at once).
    ack_deadline: Option<Instant>,
    /// The application will read nothing more.
    reader_gone: bool,
}

impl Machine {
    /// A dialler's machine: holds the merge cookies of an `opened` answer
    /// (valid for `ttl`) and keeps them fresh.
    pub fn dialer(cfg: SessionConfig, now: Instant, cookies: Vec<Bytes>, ttl: Duration) -> Machine {
        Machine { wallet: Some(Wallet::new(cookies, ttl, now)), ..Machine::new(cfg, now) }
    }

    pub fn new(cfg: SessionConfig, now: Instant) -> Machine {
        Machine {
            cfg,
            epoch: now,
            paths: BTreeMap::new(),
            send: ChunkQueue::default(),
            finished: false,
            canon: ChunkQueue::default(),
            delivered: 0,
            fin_at: None,
            disputes: Vec::new(),
            control_out: VecDeque::new(),
            events: VecDeque::new(),
            no_path_since: Some(now),
            next_check: now,
            ack_deadline: None,
            failed: None,
            drain_end: 0,
            wallet: None,
            cookies_wanted: None,
            linger_until: None,
            lingered: false,
            reader_gone: false,
        }
    }

    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    // ----- paths -------------------------------------------------------

    /// Admits a path (new, or re-admitted after it was lost). It is sent
    /// everything the peer has not acknowledged.
    pub fn add_path(&mut self, id: PathId, reliable: bool, now: Instant) {
        let acked = self.send.start;
        let readmitted = self.paths.contains_key(&id);
        let path = self.paths.entry(id).or_insert_with(|| PathState::new(reliable, acked, now));
        path.live = true;
        path.reliable = reliable;
        path.cursor = acked;
        path.peer_received = acked;
        path.last_progress = now;
        path.last_recv = now;
        path.last_data = now;
        path.behind_since = None;
        path.latent_reported = false;
        path.next_ping = now;
        path.ack_owed = true;
        path.fin_sent = false;
        path.recent_corrupt.clear();
        path.stats.admissions += 1;
        self.no_path_since = None;
        self.events.push_back(Event::PathUp { path: id, readmitted });
    }

    /// Takes a path out of the live set (its connection ended or it went
    /// silent). Strict delivery stops waiting for it.
    pub fn remove_path(&mut self, id: PathId, reason: impl Into<String>, now: Instant) {
        let Some(path) = self.paths.get_mut(&id) else { return };
        if !path.live {
            return;
        }
        path.live = false;
        path.reorder.clear();
        path.reorder_bytes = 0;
        path.pongs_owed.clear();
        self.events.push_back(Event::PathDown { path: id, reason: reason.into() });
        if self.live_count() == 0 {
            self.no_path_since = Some(now);
            self.check_rejoinable();
        }
        self.settle_disputes();
        self.advance_delivery();
        self.trim_canon();
    }

    pub fn is_live(&self, id: PathId) -> bool {
        self.paths.get(&id).is_some_and(|p| p.live)
    }

    pub fn live_count(&self) -> usize {
        self.paths.values().filter(|p| p.live).count()
    }

    pub fn path_ids(&self) -> Vec<PathId> {
        self.paths.keys().copied().collect()
    }

    pub fn path_stats(&self, id: PathId) -> Option<PathStats> {
        self.paths.get(&id).map(|p| p.stats.clone())
    }

    // ----- application side --------------------------------------------

    /// How many more bytes the application may hand over now.
    pub fn send_capacity(&self) -> usize {
        if self.finished || self.failed.is_some() {
            return 0;
        }
        let in_flight = (self.send.end - self.send.start) as usize;
        self.cfg.send_window.saturating_sub(in_flight)
    }

    /// Queues application bytes for every path. Callers respect
    /// [`Machine::send_capacity`]; the window is what bounds memory.
    pub fn push(&mut self, data: Bytes) {
        debug_assert!(!self.finished);
        self.send.push(data);
    }

    /// The application will send nothing more: the last DATA frame carries
    /// FIN.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The application closed its sending side at `now`: FIN goes out, and
    /// the session ends at the latest [`LINGER`] later once the reader is
    /// done too.
    pub fn shutdown(&mut self, now: Instant) {
        if !self.finished {
            self.finish();
            self.linger_until = Some(now + LINGER);
        }
    }

    /// The application will read nothing more (it dropped the stream).
    pub fn reader_closed(&mut self) {
        self.reader_gone = true;
    }

    /// Ends the session here, normally (a local close): nothing more is
    /// delivered or sent, and no failure is reported.
    pub fn close(&mut self) {
        if self.failed.is_none() {
            self.drain_end = self.delivered;
            self.failed = Some(SessionError::Closed);
        }
    }

    /// Why the session is over, once it is: a failure, or the normal end
    /// (both directions done, or the linger passed).
    pub fn poll_end(&mut self, now: Instant) -> Option<SessionError> {
        if self.failed.is_none() && self.finished {
            if self.linger_until.is_some_and(|t| now >= t) {
                // Passed: no longer a deadline to wake up for.
                self.linger_until = None;
                self.lingered = true;
            }
            let reader_done = self.reader_gone || self.at_eof();
            if reader_done && ((self.all_acked() && self.fin_sent()) || self.lingered) {
                self.close();
            }
        }
        self.failed.clone()
    }

    /// Everything sent is acknowledged.
    pub fn all_acked(&self) -> bool {
        self.send.start == self.send.end
    }

    /// The FIN went out on a live path (or there is none to send it on), so
    /// a normal end's `Close` follows the FIN on the wire, never replaces it
    /// (R-6-5).
    fn fin_sent(&self) -> bool {
        let mut live = self.paths.values().filter(|p| p.live).peekable();
        live.peek().is_none() || live.any(|p| p.fin_sent)
    }

    /// Whether [`Machine::take_delivered`] has something.
    pub fn has_deliverable(&self) -> bool {
        self.deliverable_end() > self.delivered
    }

    /// The peer finished and everything before its FIN was delivered.
    pub fn at_eof(&self) -> bool {
        self.fin_at == Some(self.delivered)
    }

    /// Next in-order bytes for the application (at most `max`).
    pub fn take_delivered(&mut self, max: usize) -> Option<Bytes> {
        let end = self.deliverable_end();
        if end <= self.delivered {
            return None;
        }
        let n = ((end - self.delivered) as usize).min(max);
        let data = self.canon.slice(self.delivered, n)?;
        self.delivered += data.len() as u64;
        for path in self.paths.values_mut().filter(|p| p.live) {
            path.ack_owed = true;
        }
        self.trim_canon();
        Some(data)
    }

    // ----- receiving frames --------------------------------------------

    /// Processes one frame received on `id`.
    pub fn on_frame(&mut self, id: PathId, frame: Frame, now: Instant) {
        let Some(path) = self.paths.get_mut(&id) else { return };
        if !path.live {
            return;
        }
        path.last_recv = now;
        path.stats.frames_received += 1;
        path.stats.bytes_received += frame.encoded_len() as u64;
        match frame {
            Frame::Data { offset, payload, fin } => self.on_data(id, offset, payload, fin, now),
            Frame::Ack { path_received, delivered } => self.on_ack(id, path_received, delivered, now),
            Frame::Ping(token) => path.pongs_owed.push(token),
            Frame::Pong(token) => {
                let sent = self.epoch + Duration::from_micros(token);
                path.stats.rtt = Some(now.saturating_duration_since(sent));
            }
            Frame::Control(body) => self.on_control(body, now),
            Frame::Hello(_) | Frame::HelloReply(_) => {}
        }
    }

    /// A frame on `id` failed its integrity check and was discarded by the
    /// reader. It is counted and reported against this path; a reliable
    /// path is closed (its byte stream is untrustworthy), a lossy one only
    /// once it reached [`CORRUPT_LIMIT`] within a dead timeout.
    pub fn on_corrupt(&mut self, id: PathId, now: Instant) {
        let dead_timeout = self.cfg.dead_timeout;
        let Some(path) = self.paths.get_mut(&id) else { return };
        if !path.live {
            return;
        }
        path.stats.corrupt_frames += 1;
        self.events.push_back(Event::Corrupt { path: id });
        if path.reliable {
            self.remove_path(id, "corrupt frame (CRC-32C mismatch): the byte stream is untrustworthy", now);
            return;
        }
        while path.recent_corrupt.front().is_some_and(|t| now.saturating_duration_since(*t) >= dead_timeout) {
            path.recent_corrupt.pop_front();
        }
        path.recent_corrupt.push_back(now);
        if path.recent_corrupt.len() >= CORRUPT_LIMIT {
            let reason = format!("{CORRUPT_LIMIT} corrupt frames (CRC-32C mismatch) within {dead_timeout:?}");
            self.remove_path(id, reason, now);
        }
    }

    fn on_control(&mut self, body: Bytes, now: Instant) {
        match (control::decode(body), &mut self.wallet) {
            (Received::CookieRequest(count), None) => self.cookies_wanted = Some(count),
            (Received::CookieGrant { cookies, ttl }, Some(wallet)) => wallet.replace(cookies, ttl, now),
            (Received::Close(err), _) => {
                // What was deliverable is still read; then the session ends.
                let drain = self.deliverable_end();
                self.fail(err);
                self.drain_end = drain;
            }
            _ => tracing::debug!("CONTROL message not for this side ignored"),
        }
    }

    fn on_ack(&mut self, id: PathId, path_received: u64, delivered: u64, now: Instant) {
        let delivered = delivered.min(self.send.end);
        if delivered > self.send.start {
            self.send.trim(delivered);
        }
        let path = self.paths.get_mut(&id).expect("checked by caller");
        if path_received > path.peer_received {
            path.peer_received = path_received.min(self.send.end);
            path.last_progress = now;
        }
    }

    fn on_data(&mut self, id: PathId, offset: u64, payload: Bytes, fin: bool, now: Instant) {
        let end = offset + payload.len() as u64;
        if fin && self.fin_at.is_none() {
            self.fin_at = Some(end);
        }
        // Whatever this frame makes us owe may wait a little for company.
        self.ack_deadline.get_or_insert(now + ACK_DELAY);
        let window = self.cfg.send_window as u64;
        let path = self.paths.get_mut(&id).expect("checked by caller");
        if end <= path.received {
            if !payload.is_empty() {
                path.stats.duplicate_bytes += payload.len() as u64;
            }
            // A retransmission: the sender missed our acknowledgement.
            path.ack_owed = true;
            return;
        }
        if offset > path.received {
            if offset <= self.delivered {
                // The sender skipped bytes we already have from elsewhere.
                path.stats.missed_bytes += offset - path.received;
                path.received = offset;
            } else {
                // Out of order on a lossy path: hold it (bounded).
                if path.reorder_bytes + payload.len() <= window as usize && end <= self.delivered + 2 * window {
                    path.reorder_bytes += payload.len();
                    path.reorder.insert(offset, payload);
                }
                return;
            }
        }
        self.accept_in_order(id, offset, payload);
        self.drain_reorder(id);
        if let Some(path) = self.paths.get_mut(&id) {
            path.last_data = now;
        }
        self.settle_disputes();
        self.advance_delivery();
    }

    /// `payload` starts at or before the path's position and ends after it.
    fn accept_in_order(&mut self, id: PathId, offset: u64, payload: Bytes) {
        let path = self.paths.get_mut(&id).expect("caller checked");
        let skip = (path.received - offset) as usize;
        let data = payload.slice(skip..);
        let start = path.received;
        let end = start + data.len() as u64;
        path.received = end;
        path.ack_owed = true;

        // The part others brought first: compare with the canonical copy.
        let overlap_end = end.min(self.canon.end);
        if start < overlap_end {
            let n = (overlap_end - start) as usize;
            path.stats.duplicate_bytes += n as u64;
            if let Some(at) = self.canon.first_difference(start, &data[..n]) {
                self.on_mismatch(id, at, start, data.slice(..n));
            }
        }
        // The part nobody brought yet: this path is first.
        if end > self.canon.end {
            // Positions only advance by accepting bytes (which extends the
            // canonical copy) or by skipping to at most `delivered`, so the
            // canonical copy always reaches `start`.
            debug_assert!(start <= self.canon.end);
            let fresh = data.slice((self.canon.end - start) as usize..);
            let path = self.paths.get_mut(&id).expect("caller checked");
            path.stats.first_bytes += fresh.len() as u64;
            self.canon.push(fresh);
        }
    }

    fn drain_reorder(&mut self, id: PathId) {
        loop {
            let path = self.paths.get_mut(&id).expect("caller checked");
            let Some((&off, _)) = path.reorder.first_key_value() else { return };
            if off > path.received {
                return;
            }
            let chunk = path.reorder.remove(&off).expect("just seen");
            path.reorder_bytes -= chunk.len();
            if off + chunk.len() as u64 > path.received {
                self.accept_in_order(id, off, chunk);
            }
        }
    }

    fn on_mismatch(&mut self, id: PathId, at: u64, start: u64, copy: Bytes) {
        if let Some(p) = self.paths.get_mut(&id) {
            p.stats.mismatches += 1;
        }
        self.events.push_back(Event::Mismatch { path: id, offset: at });
        if self.cfg.mode == Mode::Permissive || at < self.delivered {
            // The first copy was already passed on; the late one is dropped.
            return;
        }
        if self.live_count() < 3 {
            self.fail(SessionError::Mismatch { offset: at });
            return;
        }
        let end = start + copy.len() as u64;
        match self.disputes.iter_mut().find(|d| start < d.end && end > d.start) {
            Some(d) => {
                d.start = d.start.min(start);
                d.end = d.end.max(end);
                d.dissent.push((id, start, copy));
            }
            None => self.disputes.push(Dispute { start, end, dissent: vec![(id, start, copy)] }),
        }
    }

    /// Strict mode, three or more paths: once every live path has covered a
    /// disputed range, the majority's bytes stand and the others' paths are
    /// dropped; with no majority the session fails closed.
    fn settle_disputes(&mut self) {
        while let Some(d) = self.disputes.first() {
            let live: Vec<PathId> = self.paths.iter().filter(|(_, p)| p.live).map(|(id, _)| *id).collect();
            if live.iter().any(|id| self.paths[id].received < d.end) {
                return;
            }
            let d = self.disputes.remove(0);
            let dissenters: Vec<&(PathId, u64, Bytes)> = d.dissent.iter().filter(|(id, ..)| live.contains(id)).collect();
            let agreeing: Vec<PathId> = live.iter().copied().filter(|id| !dissenters.iter().any(|(p, ..)| p == id)).collect();
            let majority = live.len() / 2 + 1;
            if agreeing.len() >= majority {
                for (p, ..) in dissenters {
                    self.drop_path(*p, "its copy disagreed with the majority");
                }
                continue;
            }
            let (_, off0, bytes0) = dissenters[0];
            let same: Vec<PathId> = dissenters
                .iter()
                .filter(|(_, off, b)| off == off0 && b == bytes0)
                .map(|(p, ..)| *p)
                .collect();
            if same.len() >= majority {
                self.canon.overwrite(*off0, &bytes0.clone());
                let losers: Vec<PathId> = live.iter().copied().filter(|p| !same.contains(p)).collect();
                for p in losers {
                    self.drop_path(p, "its copy disagreed with the majority");
                }
            } else {
                self.fail(SessionError::Mismatch { offset: d.start });
                return;
            }
        }
    }

    fn drop_path(&mut self, id: PathId, reason: &str) {
        if let Some(p) = self.paths.get_mut(&id) {
            if p.live {
                p.live = false;
                self.events.push_back(Event::PathDown { path: id, reason: reason.into() });
            }
        }
    }

    /// Where delivery may go up to now.
    fn deliverable_end(&self) -> u64 {
        if self.failed.is_some() {
            return self.drain_end.max(self.delivered);
        }
        let mut end = match self.cfg.mode {
            Mode::Permissive => self.canon.end,
            Mode::Strict => {
                let lowest = self.paths.values().filter(|p| p.live).map(|p| p.received).min();
                lowest.unwrap_or(self.delivered).min(self.canon.end)
            }
        };
        if let Some(d) = self.disputes.first() {
            end = end.min(d.start);
        }
        end.max(self.delivered)
    }

    fn advance_delivery(&mut self) {
        // Delivery itself is pulled by the driver; here only the reorder
        // buffers of paths whose gap is now delivered are released.
        let delivered = self.delivered;
        let ids: Vec<PathId> = self
            .paths
            .iter()
            .filter(|(_, p)| p.live && !p.reorder.is_empty() && p.received < delivered)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let path = self.paths.get_mut(&id).expect("listed");
            if let Some((&off, _)) = path.reorder.first_key_value() {
                if off <= delivered {
                    path.received = path.received.max(off);
                }
            }
            self.drain_reorder(id);
        }
    }

    /// Keeps canonical bytes only while a live path may still compare
    /// against them, and never more than a window below delivery.
    fn trim_canon(&mut self) {
        let lowest_live = self.paths.values().filter(|p| p.live).map(|p| p.received).min();
        let keep_from = lowest_live.unwrap_or(self.delivered).min(self.delivered);
        let floor = self.delivered.saturating_sub(self.cfg.send_window as u64);
        let mut to = keep_from.max(floor);
        if let Some(d) = self.disputes.first() {
            to = to.min(d.start);
        }
        if to > self.canon.start {
            self.canon.trim(to);
        }
    }

    // ----- transmitting ------------------------------------------------

    /// Appends to `buf` what path `id` should send now (acks, pongs,
    /// pings, control, data), up to about `budget` bytes. Returns whether
    /// anything was added.
    pub fn poll_transmit(&mut self, id: PathId, now: Instant, buf: &mut impl FrameSink, budget: usize) -> bool {
        let before = buf.queued();
        let delivered = self.delivered;
        let epoch = self.epoch;
        let acked = self.send.start;
        let ack_ready = self.ack_ready(now);
        let Some(path) = self.paths.get_mut(&id) else { return false };
        if !path.live || self.failed.is_some() {
            return false;
        }
        let mut frames = 0u64;
        let ping_due = now >= path.next_ping;
        let has_data = path.cursor.max(acked) < self.send.end || (self.finished && !path.fin_sent);
        let company = has_data || ping_due || !path.pongs_owed.is_empty() || !self.control_out.is_empty();
        for token in path.pongs_owed.drain(..) {
            buf.put_frame(&Frame::Pong(token));
            frames += 1;
        }
        // Every heartbeat repeats the acknowledgement, so a lost ACK on a
        // lossy path costs at most one heartbeat interval.
        if (path.ack_owed && (ack_ready || company)) || ping_due {
            buf.put_frame(&Frame::Ack { path_received: path.received, delivered });
            path.ack_owed = false;
            frames += 1;
        }
        if ping_due {
            buf.put_frame(&Frame::Ping(now.duration_since(epoch).as_micros() as u64));
            path.next_ping = now + self.cfg.heartbeat_interval;
            frames += 1;
        }
        if let Some(body) = self.control_out.pop_front() {
            buf.put_frame(&Frame::Control(body));
            frames += 1;
        }
        // Data: from wherever this path is (but never below what the peer
        // already has) to the end of the send buffer.
        let mut pos = path.cursor.max(acked);
        let mut data_bytes = 0u64;
        while pos < self.send.end && buf.queued() - before < budget {
            let chunk = self.send.slice(pos, MAX_DATA_PAYLOAD).expect("pos within send buffer");
            let next = pos + chunk.len() as u64;
            let fin = self.finished && next == self.send.end;
            buf.put_data(pos, &chunk, fin);
            path.fin_sent |= fin;
            data_bytes += chunk.len() as u64;
            frames += 1;
            pos = next;
        }
        if self.finished && pos == self.send.end && !path.fin_sent {
            // Nothing left to send but the FIN itself.
            buf.put_data(pos, &Bytes::new(), true);
            path.fin_sent = true;
            frames += 1;
        }
        path.cursor = path.cursor.max(pos);
        path.stats.data_bytes_sent += data_bytes;
        path.stats.frames_sent += frames;
        path.stats.bytes_sent += (buf.queued() - before) as u64;
        if !self.paths.values().any(|p| p.live && p.ack_owed) {
            self.ack_deadline = None;
        }
        buf.queued() > before
    }

    /// Whether an ACK owed on a path may go out alone now.
    fn ack_ready(&self, now: Instant) -> bool {
        self.ack_deadline.is_none_or(|d| now >= d)
    }

    /// Queues a CONTROL frame for the next live path that transmits.
    pub fn queue_control(&mut self, body: Bytes) {
        self.control_out.push_back(body);
    }

    // ----- cookies -----------------------------------------------------

    /// Acceptor: how many fresh cookies the peer asked for, if it did; the
    /// driver issues them and hands them to [`Machine::grant_cookies`].
    pub fn poll_cookie_request(&mut self) -> Option<u32> {
        self.cookies_wanted.take()
    }

    /// Acceptor: answers the peer's request with these cookies.
    pub fn grant_cookies(&mut self, cookies: Vec<Bytes>, ttl: Duration) {
        self.queue_control(control::cookie_grant(cookies, ttl));
    }

    /// Dialler: a cookie for a merge attempt (None when it has none now).
    pub fn take_cookie(&mut self) -> Option<Bytes> {
        self.wallet.as_mut()?.take()
    }

    /// Dialler: the attempt never reached the peer; the cookie is kept.
    pub fn give_back_cookie(&mut self, cookie: Bytes) {
        if let Some(w) = self.wallet.as_mut() {
            w.give_back(cookie);
        }
    }

    /// Dialler: a merge succeeded and brought `next_cookie`.
    pub fn cookie_merged(&mut self, next_cookie: Bytes) {
        if let Some(w) = self.wallet.as_mut() {
            w.merged(next_cookie);
        }
    }

    /// Dialler: the peer refused the cookie (and consumed it).
    pub fn cookie_spent(&mut self) {
        if let Some(w) = self.wallet.as_mut() {
            w.spent();
        }
        self.check_rejoinable();
    }

    /// Dialler: with no cookie left and no live path the session can never
    /// get a path back, so it ends at once rather than by the resume
    /// timeout (§8.5), and the gateway opens a new one.
    fn check_rejoinable(&mut self) {
        let exhausted = self.wallet.as_ref().is_some_and(Wallet::exhausted);
        if exhausted && self.live_count() == 0 {
            self.fail(SessionError::OutOfCookies);
        }
    }

    /// Dialler: cookies held now.
    pub fn cookie_count(&self) -> usize {
        self.wallet.as_ref().map_or(0, Wallet::len)
    }

    /// Dialler with a live path: asks for fresh cookies when due.
    fn refresh_cookies(&mut self, now: Instant) {
        if self.live_count() == 0 {
            return;
        }
        if let Some(request) = self.wallet.as_mut().and_then(|w| w.poll_request(now)) {
            self.queue_control(request);
        }
    }

    /// Whether path `id` has anything to send right now.
    pub fn wants_transmit(&self, id: PathId, now: Instant) -> bool {
        let Some(path) = self.paths.get(&id) else { return false };
        path.live
            && self.failed.is_none()
            && ((path.ack_owed && self.ack_ready(now))
                || !path.pongs_owed.is_empty()
                || now >= path.next_ping
                || !self.control_out.is_empty()
                || path.cursor.max(self.send.start) < self.send.end
                || (self.finished && !path.fin_sent))
    }

    // ----- time --------------------------------------------------------

    /// When the driver should call [`Machine::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.poll_timeout_with(|_| true)
    }

    /// Like [`Machine::poll_timeout`], leaving out the heartbeats of paths
    /// for which `can_send` is false (a path whose transport is still busy
    /// with earlier frames sends its PING when it can take more, so waking
    /// up for it before then would be a busy loop).
    pub fn poll_timeout_with(&self, can_send: impl Fn(PathId) -> bool) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        let mut next: Option<Instant> = self.no_path_since.map(|t| t + self.cfg.resume_timeout);
        let mut earliest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.linger_until {
            earliest(t);
        }
        if self.live_count() > 0 {
            earliest(self.next_check);
            if let Some(w) = &self.wallet {
                earliest(w.refresh_at());
            }
        }
        for (&id, path) in self.paths.iter().filter(|(_, p)| p.live) {
            if can_send(id) {
                earliest(path.next_ping);
                if let Some(t) = self.ack_deadline.filter(|_| path.ack_owed) {
                    earliest(t);
                }
            }
            earliest(path.last_recv + self.cfg.dead_timeout);
            if !path.reliable && path.cursor > path.peer_received.max(self.send.start) {
                earliest(path.last_progress + self.rto(path));
            }
        }
        next
    }

    fn rto(&self, path: &PathState) -> Duration {
        let rtt = path.stats.rtt.unwrap_or(self.cfg.heartbeat_interval);
        (rtt * 3).max(Duration::from_millis(200)).min(self.cfg.dead_timeout)
    }

    /// Heartbeat deadlines, dead paths, retransmission timers, resume
    /// timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        let dead_timeout = self.cfg.dead_timeout;
        let silent: Vec<PathId> = self
            .paths
            .iter()
            .filter(|(_, p)| p.live && now.saturating_duration_since(p.last_recv) >= dead_timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            self.remove_path(id, format!("nothing received for {dead_timeout:?}"), now);
        }
        self.refresh_cookies(now);
        if now >= self.next_check {
            self.next_check = now + self.cfg.heartbeat_interval;
            self.check_data_progress(now);
        }
        let acked = self.send.start;
        let rtos: Vec<(PathId, Duration)> = self.paths.iter().map(|(id, p)| (*id, self.rto(p))).collect();
        for (id, rto) in rtos {
            let path = self.paths.get_mut(&id).expect("listed");
            let floor = path.peer_received.max(acked);
            if path.live && !path.reliable && path.cursor > floor && now >= path.last_progress + rto {
                path.stats.retransmitted_bytes += path.cursor - floor;
                path.cursor = floor;
                path.last_progress = now;
            }
        }
        if let Some(since) = self.no_path_since {
            if now >= since + self.cfg.resume_timeout {
                self.fail(SessionError::ResumeTimeout(self.cfg.resume_timeout));
            }
        }
    }

    /// A live path that has been behind the canonical copy, without
    /// bringing anything new, for the dead timeout: strict mode drops it
    /// (it would stall the session forever while its heartbeats keep it
    /// "up"); permissive mode raises a latent-error alarm once.
    fn check_data_progress(&mut self, now: Instant) {
        let top = self.canon.end;
        let delivered = self.delivered;
        let dead_timeout = self.cfg.dead_timeout;
        let mut stalled = vec![];
        for (id, path) in self.paths.iter_mut().filter(|(_, p)| p.live) {
            if path.received >= top {
                path.behind_since = None;
                path.latent_reported = false;
                continue;
            }
            let since = *path.behind_since.get_or_insert(now);
            // A lossy path may need a few retransmission rounds to fill a gap.
            let limit = if path.reliable { dead_timeout } else { dead_timeout * 3 };
            if now.saturating_duration_since(since.max(path.last_data)) >= limit {
                stalled.push((*id, delivered.saturating_sub(path.received)));
            }
        }
        for (id, behind) in stalled {
            match self.cfg.mode {
                Mode::Strict => self.remove_path(id, "heartbeats but no data: not carrying its copies", now),
                Mode::Permissive => {
                    let path = self.paths.get_mut(&id).expect("listed");
                    if !path.latent_reported {
                        path.latent_reported = true;
                        path.stats.latent_errors += 1;
                        self.events.push_back(Event::LatentError { path: id, behind });
                    }
                }
            }
        }
    }

    // ----- events and failure --------------------------------------------

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn failed(&self) -> Option<&SessionError> {
        self.failed.as_ref()
    }

    /// Ends the session with an error (reported once as an event).
    pub fn fail(&mut self, err: SessionError) {
        if self.failed.is_none() {
            self.drain_end = self.delivered;
            self.failed = Some(err.clone());
            self.events.push_back(Event::Failed(err));
        }
    }

    /// Bytes held for the peer (send buffer) and for the application
    /// (canonical copy plus reorder buffers): what bounds memory.
    pub fn buffered_bytes(&self) -> usize {
        let reorder: usize = self.paths.values().map(|p| p.reorder_bytes).sum();
        (self.send.end - self.send.start) as usize + (self.canon.end - self.canon.start) as usize + reorder
    }

    /// Offset of the next byte the application will receive.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod sim_tests;
