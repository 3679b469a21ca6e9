//! The accepting side of sessions: opens sessions, redeems merge cookies,
//! and hands each path that passes the handshake to its session.
//!
//! Opens are not authenticated, so what an Open costs is bounded
//! ([`OpenLimits`]): a session is *pending* from its Open until its first
//! path merges, and pending sessions expire after the open timeout, are
//! limited per peer address and in total (the oldest pending one gives way
//! to a new Open: a genuine dialler merges within milliseconds of its Open,
//! so a flood only churns its own sessions), and Opens per peer address are
//! rate-limited. Every check and the insert are one locked step.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::driver::{self, Role, StreamPath};
use super::{Mode, SessionConfig, SessionHandle, SessionStream};
use crate::cookie::{new_session_id, CookieJar, SessionId};
use crate::grpc::{Code, Status};
use crate::path::tcp;
use crate::proto::{esi, resi, REDUNDANCY_EXTENSION_ID};

/// How long a new path may take to send its HELLO.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Protocol version spoken here.
pub const VERSION: u32 = 1;
/// Peer addresses whose Open rate is remembered before idle ones are
/// forgotten.
const RATE_TABLE: usize = 10_000;

/// What unauthenticated Opens may cost an acceptor (`[Resi]` keys in
/// brackets; protocol §9, §10).
#[derive(Debug, Clone)]
pub struct OpenLimits {
    /// A session with no path merged this long after its Open is removed
    /// and its cookies revoked \[`OpenTimeout`, 5 s\].
    pub open_timeout: Duration,
    /// Established sessions (a path merged once) \[`MaxSessions`, 1024\];
    /// an Open beyond it is refused `RESOURCE_EXHAUSTED`.
    pub max_sessions: usize,
    /// Pending sessions in total \[`MaxPendingSessions`, 256\]; beyond it
    /// the oldest pending session is removed.
    pub max_pending: usize,
    /// Pending sessions per peer address \[`MaxPendingPerPeer`, 16\];
    /// beyond it that peer's oldest pending session is removed.
    pub max_pending_per_peer: usize,
    /// Opens per second per peer address, also the burst \[`OpenRatePerPeer`,
    /// 20; 0 = unlimited\]; beyond it Opens are refused `RESOURCE_EXHAUSTED`.
    pub open_rate_per_peer: u32,
}

impl Default for OpenLimits {
    fn default() -> Self {
        OpenLimits {
            open_timeout: Duration::from_secs(5),
            max_sessions: 1024,
            max_pending: 256,
            max_pending_per_peer: 16,
            open_rate_per_peer: 20,
        }
    }
}

/// One accepted session.
struct Entry {
    handle: SessionHandle,
    peer: Option<IpAddr>,
    opened: Instant,
    /// A path has merged at least once (no longer pending).
    merged: bool,
}

/// Open tokens of one peer address (a token bucket).
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The session table and the per-peer Open rates, under one lock so that
/// checking a limit and taking a place are one step.
#[derive(Default)]
struct Table {
    sessions: HashMap<SessionId, Entry>,
    rates: HashMap<IpAddr, Bucket>,
}

/// Sessions this gateway accepted, found by cookie.
pub struct SessionRegistry {
    cfg: SessionConfig,
    limits: OpenLimits,
    jar: Arc<Mutex<CookieJar>>,
    sessions: Mutex<Table>,
    new_sessions: mpsc::Sender<SessionStream>,
}

impl SessionRegistry {
    /// A registry; every session it opens is handed out on the receiver, to
    /// be served as an HTTP/2 server connection.
    pub fn new(cfg: SessionConfig) -> (Arc<SessionRegistry>, mpsc::Receiver<SessionStream>) {
        SessionRegistry::with_limits(cfg, OpenLimits::default())
    }

    /// Like [`SessionRegistry::new`], with the given limits on Opens.
    pub fn with_limits(cfg: SessionConfig, limits: OpenLimits) -> (Arc<SessionRegistry>, mpsc::Receiver<SessionStream>) {
        // The channel never refuses a session the table admitted.
        let (tx, rx) = mpsc::channel(limits.max_pending.max(1) + 64);
        let registry = SessionRegistry {
            cfg,
            limits,
            jar: Arc::new(Mutex::new(CookieJar::default())),
            sessions: Mutex::new(Table::default()),
            new_sessions: tx,
        };
        (Arc::new(registry), rx)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.sessions.lock().expect("sessions lock")
    }

    /// Handles a redundancy `Open` from an unknown peer (see
    /// [`SessionRegistry::open_from`]).
    pub fn open(self: &Arc<Self>, req: &resi::OpenRequest) -> Result<resi::OpenResponse, Status> {
        self.open_from(req, None)
    }

    /// Handles a redundancy `Open` from `peer` (its IP address, when the
    /// Open came over a socket): creates a pending session waiting for its
    /// paths and returns its cookies, within the [`OpenLimits`].
    pub fn open_from(self: &Arc<Self>, req: &resi::OpenRequest, peer: Option<IpAddr>) -> Result<resi::OpenResponse, Status> {
        if req.version != VERSION {
            let msg = format!("RESI version {} is not supported (this hop speaks {VERSION})", req.version);
            return Err(Status::new(Code::FailedPrecondition, msg));
        }
        let mut cfg = self.cfg.clone();
        // This hop's configured mode is a floor: a dialler may ask for
        // strict, never weaken a strict acceptor (protocol §3.1).
        cfg.mode = Mode::from_wire(req.mode).stricter(self.cfg.mode);
        let id = new_session_id();
        let count = req.cookies.clamp(1, 16);
        let now = Instant::now();
        let cookies = {
            let mut jar = self.jar.lock().expect("cookie jar lock");
            (0..count).map(|_| jar.issue(id, cfg.cookie_ttl, now)).collect()
        };
        let handle = match self.admit(id, &cfg, peer, now) {
            Ok(handle) => handle,
            Err(status) => {
                self.jar.lock().expect("cookie jar lock").revoke_session(&id);
                return Err(status);
            }
        };
        let registry = Arc::downgrade(self);
        let open_timeout = self.limits.open_timeout;
        tokio::spawn(async move {
            let expired = tokio::select! {
                reason = handle.closed() => Err(reason),
                _ = tokio::time::sleep(open_timeout) => Ok(()),
            };
            if expired.is_ok() {
                if let Some(registry) = registry.upgrade() {
                    registry.expire_if_pending(&id);
                }
            }
            let reason = match expired {
                Err(reason) => reason,
                Ok(()) => handle.closed().await,
            };
            if let Some(registry) = registry.upgrade() {
                registry.forget(&id);
            }
            tracing::debug!(session = %driver::hex(&id), %reason, "accepted session ended");
        });
        tracing::info!(session = %driver::hex(&id), mode = ?cfg.mode, "session opened");
        Ok(resi::OpenResponse {
            version: VERSION,
            session_id: id.to_vec().into(),
            cookies,
            cookie_ttl_ms: cfg.cookie_ttl.as_millis() as u32,
            mode: cfg.mode.to_wire(),
        })
    }

    /// Checks every limit and takes the session's place in one locked step:
    /// the per-peer Open rate, the established-session limit, then room
    /// among the pending sessions (made by removing the oldest pending one
    /// of this peer, or of anyone). Starts the session.
    fn admit(&self, id: SessionId, cfg: &SessionConfig, peer: Option<IpAddr>, now: Instant) -> Result<SessionHandle, Status> {
        let mut evicted = Vec::new();
        let handle = {
            let mut table = self.table();
            if let Some(ip) = peer {
                table.take_open_token(ip, self.limits.open_rate_per_peer, now)?;
            }
            let established = table.sessions.values().filter(|e| e.merged).count();
            if established >= self.limits.max_sessions {
                return Err(Status::new(Code::ResourceExhausted, "too many RESI sessions at this hop"));
            }
            if let Some(ip) = peer {
                let of_peer = |e: &Entry| !e.merged && e.peer == Some(ip);
                if table.sessions.values().filter(|e| of_peer(e)).count() >= self.limits.max_pending_per_peer {
                    evicted.extend(table.evict_oldest_pending(of_peer));
                }
            }
            if table.sessions.values().filter(|e| !e.merged).count() >= self.limits.max_pending {
                evicted.extend(table.evict_oldest_pending(|e| !e.merged));
            }
            let role = Role::Acceptor { jar: self.jar.clone(), cookie_ttl: cfg.cookie_ttl };
            let (stream, handle) = driver::spawn(cfg.clone(), role, id);
            if self.new_sessions.try_send(stream).is_err() {
                handle.close();
                return Err(Status::new(Code::Unavailable, "this hop is not accepting sessions"));
            }
            table.sessions.insert(id, Entry { handle: handle.clone(), peer, opened: now, merged: false });
            handle
        };
        for old in evicted {
            tracing::info!(session = %driver::hex(&old.0), "pending session removed to make room for a new Open");
            self.jar.lock().expect("cookie jar lock").revoke_session(&old.0);
            old.1.close();
        }
        Ok(handle)
    }

    /// Removes a session that still has no merged path (its open timeout
    /// passed) and revokes its cookies.
    fn expire_if_pending(&self, id: &SessionId) {
        let entry = {
            let mut table = self.table();
            match table.sessions.get(id) {
                Some(e) if !e.merged => table.sessions.remove(id),
                _ => None,
            }
        };
        if let Some(entry) = entry {
            tracing::info!(session = %driver::hex(id), "no path merged within the open timeout: session removed");
            self.jar.lock().expect("cookie jar lock").revoke_session(id);
            entry.handle.close();
        }
    }

    fn forget(&self, id: &SessionId) {
        self.table().sessions.remove(id);
        self.jar.lock().expect("cookie jar lock").revoke_session(id);
    }

    /// Serves one accepted TCP connection that starts with the RESI path
    /// preface (not yet consumed): handshake, then hands it to its session.
    pub async fn accept_tcp_path(self: &Arc<Self>, mut stream: TcpStream) {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let (read_buf, hello) = match tcp::accept(&mut stream, HANDSHAKE_TIMEOUT).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(%peer, error = %e, "path handshake failed");
                return;
            }
        };
        let ip = stream.peer_addr().ok().map(|a| a.ip());
        let (reply, joined) = self.answer_hello_from(hello, ip);
        if let Err(e) = tcp::reply(&mut stream, reply).await {
            tracing::info!(%peer, error = %e, "path handshake reply failed");
            return;
        }
        if let Some((path, handle)) = joined {
            let conn = StreamPath { io: Box::new(stream), read_buf, reliable: true };
            handle.add_path(path, conn, None);
        }
    }

    /// Answers a HELLO that arrived on any transport: the HELLO_REPLY body
    /// to send back and, if it was accepted, the session and path id the
    /// transport now carries. The caller sends the reply *before* handing
    /// the path to the session, so the reply precedes every session frame.
    pub fn answer_hello(self: &Arc<Self>, hello: Bytes) -> (Bytes, Option<(u32, SessionHandle)>) {
        self.answer_hello_from(hello, None)
    }

    /// [`SessionRegistry::answer_hello`] for a HELLO from `peer` (an Open in
    /// it counts against that address's limits).
    pub fn answer_hello_from(self: &Arc<Self>, hello: Bytes, peer: Option<IpAddr>) -> (Bytes, Option<(u32, SessionHandle)>) {
        match self.handle_hello(hello, peer) {
            Ok((reply, path, handle)) => (reply, Some((path, handle))),
            Err(status) => {
                tracing::info!(%status, "path refused");
                let body = resi::HelloReply {
                    result: Some(resi::hello_reply::Result::Error(resi::Status {
                        code: status.code as i32,
                        message: status.message,
                    })),
                };
                (body.encode_to_vec().into(), None)
            }
        }
    }

    /// Decides on a HELLO: returns the reply and the session to join.
    fn handle_hello(self: &Arc<Self>, hello: Bytes, peer: Option<IpAddr>) -> Result<(Bytes, u32, SessionHandle), Status> {
        let req = esi::ModifyRequest::decode(hello)
            .map_err(|e| Status::new(Code::InvalidArgument, format!("HELLO is not a ModifyRequest: {e}")))?;
        let ext = req.ext.ok_or_else(|| Status::new(Code::InvalidArgument, "HELLO without extension"))?;
        if ext.id != REDUNDANCY_EXTENSION_ID {
            let msg = format!("extension {} is not implemented on a RESI path", ext.id);
            return Err(Status::new(Code::Unimplemented, msg));
        }
        let msg = resi::Redundancy::decode(ext.data)
            .map_err(|e| Status::new(Code::InvalidArgument, format!("bad redundancy message: {e}")))?;
        let (answer, path, handle) = match msg.msg {
            Some(resi::redundancy::Msg::Merge(merge)) => {
                let (merged, handle) = self.merge(&merge)?;
                (resi::redundancy::Msg::Merged(merged), merge.path_id, handle)
            }
            Some(resi::redundancy::Msg::Open(open)) => {
                // Open on a path: the path itself becomes path 0 (and uses
                // one cookie more than the dialler asked for).
                let open = resi::OpenRequest { cookies: (open.cookies + 1).min(16), ..open };
                let mut opened = self.open_from(&open, peer)?;
                let cookie = opened.cookies.pop().expect("at least one cookie");
                let merge = resi::MergeRequest { cookie, path_id: 0 };
                let (_, handle) = self.merge(&merge)?;
                (resi::redundancy::Msg::Opened(opened), 0, handle)
            }
            _ => return Err(Status::new(Code::InvalidArgument, "HELLO must carry open or merge")),
        };
        let response = esi::ModifyResponse {
            ext: Some(esi::Extension {
                id: REDUNDANCY_EXTENSION_ID,
                pass: false,
                data: resi::Redundancy { msg: Some(answer) }.encode_to_vec().into(),
            }),
        };
        let reply = resi::HelloReply { result: Some(resi::hello_reply::Result::Response(response.encode_to_vec().into())) };
        Ok((reply.encode_to_vec().into(), path, handle))
    }

    /// Redeems a merge cookie: the session it names, and its next cookie.
    fn merge(&self, merge: &resi::MergeRequest) -> Result<(resi::MergeResponse, SessionHandle), Status> {
        let now = Instant::now();
        let mut jar = self.jar.lock().expect("cookie jar lock");
        let id = jar.redeem(&merge.cookie, now)?;
        let handle = self.table().merged(&id);
        let handle = handle.filter(|h| !h.is_closed()).ok_or_else(|| Status::new(Code::NotFound, "the session of this cookie has ended"))?;
        let next_cookie = jar.issue(id, self.cfg.cookie_ttl, now);
        let merged = resi::MergeResponse {
            path_id: merge.path_id,
            next_cookie,
            cookie_ttl_ms: self.cfg.cookie_ttl.as_millis() as u32,
        };
        Ok((merged, handle))
    }

    /// Number of sessions alive (for statistics and tests).
    pub fn session_count(&self) -> usize {
        self.table().sessions.len()
    }

    /// Number of sessions alive that no path has merged into yet.
    pub fn pending_count(&self) -> usize {
        self.table().sessions.values().filter(|e| !e.merged).count()
    }

    /// Handles of the sessions alive now.
    pub fn sessions(&self) -> Vec<SessionHandle> {
        self.table().sessions.values().map(|e| e.handle.clone()).collect()
    }

    /// Closes every session (gateway shutdown).
    pub fn close_all(&self) {
        for handle in self.sessions() {
            handle.close();
        }
    }
}

impl Table {
    /// Takes one Open token of `ip` (`rate` per second, burst `rate`; 0 is
    /// unlimited) or refuses the Open.
    fn take_open_token(&mut self, ip: IpAddr, rate: u32, now: Instant) -> Result<(), Status> {
        if rate == 0 {
            return Ok(());
        }
        let rate = rate as f64;
        let refill = |b: &Bucket| (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate);
        if self.rates.len() >= RATE_TABLE {
            self.rates.retain(|_, b| refill(b) < rate);
        }
        let bucket = self.rates.entry(ip).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = refill(bucket);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let msg = format!("too many RESI Opens from {ip} (limit {rate} per second)");
            return Err(Status::new(Code::ResourceExhausted, msg));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Removes the oldest pending session matching `which`.
    fn evict_oldest_pending(&mut self, which: impl Fn(&Entry) -> bool) -> Option<(SessionId, SessionHandle)> {
        let oldest = self.sessions.iter().filter(|(_, e)| which(e)).min_by_key(|(_, e)| e.opened).map(|(id, _)| *id)?;
        self.sessions.remove(&oldest).map(|e| (oldest, e.handle))
    }

    /// The session `id`, now marked as having had a path merged.
    fn merged(&mut self, id: &SessionId) -> Option<SessionHandle> {
        let entry = self.sessions.get_mut(id)?;
        entry.merged = true;
        Some(entry.handle.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(limits: OpenLimits) -> Arc<SessionRegistry> {
        let (registry, mut rx) = SessionRegistry::with_limits(SessionConfig::default(), limits);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        registry
    }

    fn open_req() -> resi::OpenRequest {
        resi::OpenRequest { version: VERSION, mode: Mode::Strict.to_wire(), cookies: 1 }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    /// Opens and merges one path, as a genuine dialler does at once.
    fn open_and_merge(reg: &Arc<SessionRegistry>, peer: Option<IpAddr>) -> SessionHandle {
        let opened = reg.open_from(&open_req(), peer).unwrap();
        let merge = resi::MergeRequest { cookie: opened.cookies[0].clone(), path_id: 0 };
        reg.merge(&merge).unwrap().1
    }

    #[tokio::test]
    async fn a_session_with_no_merged_path_expires_and_its_cookies_are_revoked() {
        let reg = registry(OpenLimits { open_timeout: Duration::from_millis(200), ..OpenLimits::default() });
        let opened = reg.open_from(&open_req(), ip(1)).unwrap();
        let kept = open_and_merge(&reg, ip(1));
        assert_eq!((reg.session_count(), reg.pending_count()), (2, 1));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!((reg.session_count(), reg.pending_count()), (1, 0), "the pending session outlived its open timeout");
        assert!(!kept.is_closed(), "a merged session must not expire");
        let merge = resi::MergeRequest { cookie: opened.cookies[0].clone(), path_id: 0 };
        let err = reg.merge(&merge).err().expect("a revoked cookie");
        assert_eq!((err.code, err.message.as_str()), (Code::Unauthenticated, "unknown merge cookie"));
    }

    #[tokio::test]
    async fn a_flood_from_the_dialler_s_own_address_only_evicts_pending_sessions() {
        let limits = OpenLimits { max_pending: 8, max_pending_per_peer: 4, open_rate_per_peer: 0, ..OpenLimits::default() };
        let reg = registry(limits);
        let genuine = open_and_merge(&reg, ip(1));
        for i in 0..200 {
            tokio::task::yield_now().await; // the gateway serves each new session
            reg.open_from(&open_req(), ip(1)).unwrap();
            if i == 100 {
                // Another genuine dialler on the same address, mid-flood.
                open_and_merge(&reg, ip(1));
            }
            assert!(reg.pending_count() <= 4);
        }
        // Other addresses share the total: their oldest pending ones give way.
        for last in 2..30 {
            tokio::task::yield_now().await;
            reg.open_from(&open_req(), ip(last)).unwrap();
            assert!(reg.pending_count() <= 8);
        }
        assert_eq!(reg.session_count(), reg.pending_count() + 2);
        assert!(!genuine.is_closed());
    }

    #[tokio::test]
    async fn opens_are_rate_limited_per_address() {
        let reg = registry(OpenLimits { open_rate_per_peer: 5, ..OpenLimits::default() });
        for _ in 0..5 {
            reg.open_from(&open_req(), ip(1)).unwrap();
        }
        let err = reg.open_from(&open_req(), ip(1)).unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert!(err.message.contains("127.0.0.1"), "{}", err.message);
        reg.open_from(&open_req(), ip(2)).expect("another address has its own budget");
        tokio::time::sleep(Duration::from_millis(250)).await;
        reg.open_from(&open_req(), ip(1)).expect("the budget refills");
    }

    #[tokio::test]
    async fn the_established_limit_holds_exactly() {
        let reg = registry(OpenLimits { max_sessions: 2, ..OpenLimits::default() });
        open_and_merge(&reg, ip(1));
        open_and_merge(&reg, ip(2));
        let err = reg.open_from(&open_req(), ip(3)).unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert_eq!(reg.session_count(), 2);
    }

    #[tokio::test]
    async fn the_mode_in_force_is_the_stricter_and_is_answered() {
        let (reg, mut rx) = SessionRegistry::new(SessionConfig { mode: Mode::Strict, ..SessionConfig::default() });
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let ask = |mode: i32| resi::OpenRequest { mode, ..open_req() };
        for asked in [resi::Mode::Permissive, resi::Mode::Strict, resi::Mode::Unspecified] {
            assert_eq!(reg.open(&ask(asked as i32)).unwrap().mode, resi::Mode::Strict as i32, "{asked:?}");
        }
        let (reg, mut rx) = SessionRegistry::new(SessionConfig { mode: Mode::Permissive, ..SessionConfig::default() });
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        assert_eq!(reg.open(&ask(resi::Mode::Permissive as i32)).unwrap().mode, resi::Mode::Permissive as i32);
        assert_eq!(reg.open(&ask(resi::Mode::Strict as i32)).unwrap().mode, resi::Mode::Strict as i32);
        assert_eq!(reg.open(&ask(resi::Mode::Unspecified as i32)).unwrap().mode, resi::Mode::Strict as i32);
    }
}
