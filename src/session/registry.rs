//! The accepting side of sessions: opens sessions, redeems merge cookies,
//! and hands each path that passes the handshake to its session.
//!
//! On TLS connections two more checks hold (docs/protocol.md §3.3): a
//! merge must carry the binding of its cookie to the very connection it
//! arrived on, and a session opened by a client certificate only takes
//! paths that present the same certificate. Both refusals are
//! `PERMISSION_DENIED`.
//! Opens are not authenticated, so what an Open costs is bounded
//! ([`OpenLimits`], see [`super::admission`]): pending sessions (no path
//! merged yet) expire after the open timeout and are limited per peer
//! address and in total, and Opens per peer address are rate-limited. Every
//! check and the insert are one locked step.
//!
//! An Open that names its dialler ends the sessions an earlier run of that
//! dialler left behind with no live path ([`super::restart`]): a restarted
//! client gateway frees its old session at once, not after the resume
//! timeout.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::admission::{Entry, Table};
pub use super::admission::OpenLimits;
use super::driver::{self, Role};
use super::{DiallerId, Mode, SessionConfig, SessionError, SessionHandle, SessionStream};
use crate::cookie::{new_session_id, CookieJar, SessionId};
use crate::grpc::{Code, Status};
use crate::path::{HelloAcceptor, PathIo, PathSink};
use crate::proto::{esi, resi, REDUNDANCY_EXTENSION_ID};
use crate::tls::{binding_matches, CertFingerprint, ChannelBinding};

/// The registry as the path layer sees it: what decides on HELLOs.
impl HelloAcceptor for Arc<SessionRegistry> {
    fn accept_hello(&self, hello: Bytes, channel: &ChannelBinding, peer: Option<IpAddr>) -> (Bytes, Option<PathSink>) {
        let (reply, joined) = self.answer_hello(hello, channel, peer);
        let sink = joined.map(|(path, handle)| Box::new(move |conn| handle.add_path(path, conn, None)) as PathSink);
        (reply, sink)
    }
}

/// Protocol version spoken here.
pub const VERSION: u32 = 1;
/// Sessions this gateway accepted, found by cookie.
pub struct SessionRegistry {
    cfg: SessionConfig,
    limits: OpenLimits,
    jar: Arc<Mutex<CookieJar>>,
    sessions: Mutex<Table>,
    /// The client certificate each session was opened with (mutual TLS).
    owners: Mutex<std::collections::HashMap<SessionId, CertFingerprint>>,
    new_sessions: mpsc::Sender<SessionStream>,
    /// Sessions ended because their dialler restarted.
    superseded: AtomicU64,
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
            owners: Mutex::new(std::collections::HashMap::new()),
            new_sessions: tx,
            superseded: AtomicU64::new(0),
        };
        (Arc::new(registry), rx)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.sessions.lock().expect("sessions lock")
    }

    /// Handles a redundancy `Open` from an unknown peer (see
    /// [`SessionRegistry::open_from`]).
    pub fn open(self: &Arc<Self>, req: &resi::OpenRequest) -> Result<resi::OpenResponse, Status> {
        self.open_for(req, None, None)
    }

    /// [`SessionRegistry::open_for`] from `peer`, with no client certificate.
    pub fn open_from(self: &Arc<Self>, req: &resi::OpenRequest, peer: Option<IpAddr>) -> Result<resi::OpenResponse, Status> {
        self.open_for(req, None, peer)
    }

    /// Handles a redundancy `Open` from `peer` (its IP address, when the
    /// Open came over a socket) that presented the client certificate
    /// `owner` (mutual TLS: paths of the session must present it too):
    /// creates a pending session waiting for its paths and returns its
    /// cookies, within the [`OpenLimits`]. An Open that names its dialler
    /// first ends the sessions an earlier run of it left without a live
    /// path (their places then count for this one).
    pub fn open_for(
        self: &Arc<Self>,
        req: &resi::OpenRequest,
        owner: Option<CertFingerprint>,
        peer: Option<IpAddr>,
    ) -> Result<resi::OpenResponse, Status> {
        if req.version != VERSION {
            let msg = format!("RESI version {} is not supported (this hop speaks {VERSION})", req.version);
            return Err(Status::new(Code::FailedPrecondition, msg));
        }
        let dialler = DiallerId::from_open(req)?;
        let mut cfg = self.cfg.clone();
        // This hop's configured mode is a floor: a dialler may ask for
        // strict, never weaken a strict acceptor (protocol §3.1).
        cfg.mode = Mode::from_wire(req.mode).stricter(self.cfg.mode);
        let id = new_session_id();
        if dialler.is_named() {
            self.end_superseded(&dialler, owner, &id);
        }
        let count = req.cookies.clamp(1, 16);
        let now = Instant::now();
        let cookies = {
            let mut jar = self.jar.lock().expect("cookie jar lock");
            (0..count).map(|_| jar.issue(id, cfg.cookie_ttl, now)).collect()
        };
        let handle = match self.admit(id, &cfg, peer, now, dialler) {
            Ok(handle) => handle,
            Err(status) => {
                self.jar.lock().expect("cookie jar lock").revoke_session(&id);
                return Err(status);
            }
        };
        if let Some(owner) = owner {
            self.owners.lock().expect("owners lock").insert(id, owner);
        }
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

    /// Checks every limit and takes the session's place in one locked step
    /// ([`Table::make_room`]), then starts the session; the pending
    /// sessions that made room are closed and their cookies revoked.
    fn admit(
        &self,
        id: SessionId,
        cfg: &SessionConfig,
        peer: Option<IpAddr>,
        now: Instant,
        dialler: DiallerId,
    ) -> Result<SessionHandle, Status> {
        let (handle, evicted) = {
            let mut table = self.table();
            let evicted = table.make_room(&self.limits, peer, now)?;
            let role = Role::Acceptor { jar: self.jar.clone(), cookie_ttl: cfg.cookie_ttl };
            let (stream, handle) = driver::spawn(cfg.clone(), role, id);
            if self.new_sessions.try_send(stream).is_err() {
                handle.close();
                return Err(Status::new(Code::Unavailable, "this hop is not accepting sessions"));
            }
            table.sessions.insert(id, Entry { handle: handle.clone(), peer, opened: now, merged: false, dialler });
            (handle, evicted)
        };
        for old in evicted {
            tracing::info!(session = %driver::hex(&old.0), "pending session removed to make room for a new Open");
            self.jar.lock().expect("cookie jar lock").revoke_session(&old.0);
            old.1.close();
        }
        Ok(handle)
    }

    /// Ends the sessions an earlier run of `dialler` left behind with no
    /// live path (protocol §3.1, R-3.1-9), for the Open of session `by`
    /// that presented the client certificate `owner`: a session opened
    /// with a certificate is only ended by an Open with the same one. Those
    /// that still have a live path are looked at once more a dead timeout
    /// later: a path whose peer vanished without closing it (a crashed
    /// host) is live until then.
    fn end_superseded(self: &Arc<Self>, dialler: &DiallerId, owner: Option<CertFingerprint>, by: &SessionId) {
        let mut old = self.table().superseded_by(dialler);
        {
            let owners = self.owners.lock().expect("owners lock");
            old.retain(|(id, _)| owners.get(id).is_none_or(|o| Some(*o) == owner));
        }
        let kept = self.end_pathless(old, dialler, by);
        if kept.is_empty() {
            return;
        }
        let registry = Arc::downgrade(self);
        let (dialler, by) = (dialler.clone(), *by);
        let again = self.cfg.dead_timeout + self.cfg.heartbeat_interval;
        tokio::spawn(async move {
            tokio::time::sleep(again).await;
            if let Some(registry) = registry.upgrade() {
                registry.end_pathless(kept, &dialler, &by);
            }
        });
    }

    /// Ends those of `sessions` that have no live path now, as `ABORTED`
    /// (§8.5: cookies revoked, `Close` on any path still open); returns the
    /// others. (Each session's lock is taken with the table's released.)
    fn end_pathless(
        &self,
        sessions: Vec<(SessionId, SessionHandle)>,
        dialler: &DiallerId,
        by: &SessionId,
    ) -> Vec<(SessionId, SessionHandle)> {
        let mut kept = Vec::new();
        for (id, handle) in sessions {
            if handle.is_closed() {
                continue;
            }
            if handle.live_paths() > 0 {
                kept.push((id, handle));
                continue;
            }
            if self.table().sessions.remove(&id).is_none() {
                continue;
            }
            let (old, new) = (driver::hex(&id), driver::hex(by));
            tracing::info!(dialler = %dialler.name, %old, %new, "dialler restarted: its old session, with no live path, is ended");
            self.jar.lock().expect("cookie jar lock").revoke_session(&id);
            self.owners.lock().expect("owners lock").remove(&id);
            handle.end(SessionError::Superseded { dialler: dialler.name.clone(), by: new });
            self.superseded.fetch_add(1, Ordering::Relaxed);
        }
        kept
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
        self.owners.lock().expect("owners lock").remove(id);
        self.jar.lock().expect("cookie jar lock").revoke_session(id);
    }

    /// Serves one accepted plain TCP connection that starts with the RESI
    /// path preface (not yet consumed): handshake, then hands it to its
    /// session. The preface and HELLO must arrive within `handshake_timeout`.
    pub async fn accept_tcp_path(self: &Arc<Self>, stream: TcpStream, handshake_timeout: Duration) {
        let addr = stream.peer_addr().ok();
        let peer = addr.map(|a| a.to_string()).unwrap_or_default();
        self.accept_path(stream, &peer, addr.map(|a| a.ip()), ChannelBinding::default(), handshake_timeout).await
    }

    /// Like [`SessionRegistry::accept_tcp_path`] on any byte stream (a TLS
    /// connection), with what that connection tells about itself; `peer`
    /// names it in logs, `peer_ip` is its address for the Open limits.
    pub async fn accept_path<S: PathIo>(
        self: &Arc<Self>,
        stream: S,
        peer: &str,
        peer_ip: Option<IpAddr>,
        channel: ChannelBinding,
        handshake_timeout: Duration,
    ) {
        crate::path::accept_stream(self, stream, peer, peer_ip, channel, handshake_timeout).await
    }

    /// Answers a HELLO that arrived on any transport: the HELLO_REPLY body
    /// to send back and, if it was accepted, the session and path id the
    /// transport now carries. The caller sends the reply *before* handing
    /// the path to the session, so the reply precedes every session frame.
    /// `channel` is what the carrying connection tells about itself (empty
    /// for plain TCP and NKN); an Open in it from `peer` counts against that
    /// address's limits.
    pub fn answer_hello(
        self: &Arc<Self>,
        hello: Bytes,
        channel: &ChannelBinding,
        peer: Option<IpAddr>,
    ) -> (Bytes, Option<(u32, SessionHandle)>) {
        match self.handle_hello(hello, channel, peer) {
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
    fn handle_hello(
        self: &Arc<Self>,
        hello: Bytes,
        channel: &ChannelBinding,
        peer: Option<IpAddr>,
    ) -> Result<(Bytes, u32, SessionHandle), Status> {
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
                let (merged, handle) = self.merge(&merge, channel)?;
                (resi::redundancy::Msg::Merged(merged), merge.path_id, handle)
            }
            Some(resi::redundancy::Msg::Open(open)) => {
                // Open on a path: the path itself becomes path 0 (and uses
                // one cookie more than the dialler asked for).
                let open = resi::OpenRequest { cookies: (open.cookies + 1).min(16), ..open };
                let mut opened = self.open_for(&open, channel.peer_certificate, peer)?;
                let cookie = opened.cookies.pop().expect("at least one cookie");
                let binding = channel.exporter.map(|e| crate::tls::merge_binding(&cookie, &e).to_vec()).unwrap_or_default();
                let merge = resi::MergeRequest { cookie, path_id: 0, binding: binding.into() };
                let (_, handle) = self.merge(&merge, channel)?;
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
    /// On a TLS connection the cookie must be bound to it (checked before
    /// the cookie is spent), and the session's owner certificate, if any,
    /// must be the connection's.
    fn merge(&self, merge: &resi::MergeRequest, channel: &ChannelBinding) -> Result<(resi::MergeResponse, SessionHandle), Status> {
        if let Some(exporter) = &channel.exporter {
            if !binding_matches(&merge.cookie, exporter, &merge.binding) {
                return Err(Status::new(Code::PermissionDenied, "merge not bound to this TLS connection"));
            }
        }
        let now = Instant::now();
        let mut jar = self.jar.lock().expect("cookie jar lock");
        let id = jar.redeem(&merge.cookie, now)?;
        let owner = self.owners.lock().expect("owners lock").get(&id).copied();
        if owner.is_some() && owner != channel.peer_certificate {
            let msg = "merge presents another client certificate than the one that opened the session";
            return Err(Status::new(Code::PermissionDenied, msg));
        }
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

    /// Sessions ended so far because their dialler restarted (§3.1).
    pub fn superseded_count(&self) -> u64 {
        self.superseded.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(limits: OpenLimits) -> Arc<SessionRegistry> {
        registry_with(SessionConfig::default(), limits)
    }

    fn registry_with(cfg: SessionConfig, limits: OpenLimits) -> Arc<SessionRegistry> {
        let (registry, mut rx) = SessionRegistry::with_limits(cfg, limits);
        // The streams are kept open, as a gateway serving them does: a
        // session whose application dropped its stream ends.
        tokio::spawn(async move {
            let mut streams = Vec::new();
            while let Some(stream) = rx.recv().await {
                streams.push(stream);
            }
        });
        registry
    }

    fn open_req() -> resi::OpenRequest {
        resi::OpenRequest { version: VERSION, mode: Mode::Strict.to_wire(), cookies: 1, ..Default::default() }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    /// Opens and merges one path, as a genuine dialler does at once.
    fn open_and_merge(reg: &Arc<SessionRegistry>, peer: Option<IpAddr>) -> SessionHandle {
        let opened = reg.open_from(&open_req(), peer).unwrap();
        let merge = resi::MergeRequest { cookie: opened.cookies[0].clone(), path_id: 0, ..Default::default() };
        reg.merge(&merge, &ChannelBinding::default()).unwrap().1
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
        let merge = resi::MergeRequest { cookie: opened.cookies[0].clone(), path_id: 0, ..Default::default() };
        let err = reg.merge(&merge, &ChannelBinding::default()).err().expect("a revoked cookie");
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

    fn named_open(dialler: &DiallerId) -> resi::OpenRequest {
        resi::OpenRequest { dialler: dialler.name.clone(), instance: dialler.instance.clone(), ..open_req() }
    }

    /// Opens a session as `dialler` and merges one path; with `live`, a
    /// path is handed to it (an in-memory stream whose far end is returned)
    /// and is live when this returns.
    async fn open_as(reg: &Arc<SessionRegistry>, dialler: &DiallerId, live: bool) -> (SessionHandle, Option<tokio::io::DuplexStream>) {
        let opened = reg.open_from(&named_open(dialler), ip(1)).unwrap();
        let merge = resi::MergeRequest { cookie: opened.cookies[0].clone(), path_id: 0, ..Default::default() };
        let handle = reg.merge(&merge, &ChannelBinding::default()).unwrap().1;
        if !live {
            return (handle, None);
        }
        let (near, far) = tokio::io::duplex(64 * 1024);
        let path = crate::path::StreamPath { io: Box::new(near), read_buf: Default::default(), reliable: true };
        handle.add_path(0, path, None);
        for _ in 0..200 {
            if handle.live_paths() == 1 {
                return (handle, Some(far));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the path never became live");
    }

    /// Waits (at most 5 s) until `handle` has ended; its reason.
    async fn ended(handle: &SessionHandle) -> SessionError {
        tokio::time::timeout(Duration::from_secs(5), handle.closed()).await.expect("the session ends")
    }

    fn with_dead_timeout(dead_timeout: Duration) -> Arc<SessionRegistry> {
        registry_with(SessionConfig { dead_timeout, ..SessionConfig::default() }, OpenLimits::default())
    }

    #[tokio::test]
    async fn a_new_instance_of_a_dialler_ends_its_old_sessions_without_a_live_path() {
        let reg = with_dead_timeout(Duration::from_secs(60));
        // Another running gateway of the same name, with a live path.
        let (alive, _far) = open_as(&reg, &DiallerId::new("client"), true).await;
        let (gone, _) = open_as(&reg, &DiallerId::new("client"), false).await;
        assert!(!alive.is_closed(), "a session with a live path is never ended");
        let (other_name, _) = open_as(&reg, &DiallerId::new("other"), false).await;
        let (anonymous, _) = open_as(&reg, &DiallerId::default(), false).await;
        let no_instance = DiallerId { name: "client".into(), instance: Bytes::new() };
        let (unnumbered, _) = open_as(&reg, &no_instance, false).await;
        assert_eq!(reg.session_count(), 5);

        let new = DiallerId::new("client");
        let (current, _) = open_as(&reg, &new, false).await;
        let reason = ended(&gone).await;
        assert_eq!(reason, SessionError::Superseded { dialler: "client".into(), by: driver::hex(&current.id()) });
        let close = resi::Control::decode(crate::session::control::close(&reason)).unwrap();
        let Some(resi::control::Msg::Close(close)) = close.msg else { panic!("not a Close: {close:?}") };
        assert_eq!(close.reason.map(|r| r.code), Some(Code::Aborted as i32), "its Close says ABORTED");
        assert_eq!(reg.superseded_count(), 1);
        assert_eq!(reg.session_count(), 5, "only the old path-less session of the name was ended");
        for kept in [&other_name, &anonymous, &unnumbered, &alive, &current] {
            assert!(!kept.is_closed(), "{:?}", kept.close_reason());
        }
        // The same instance opening again (a new session of the same run)
        // ends nothing, and an anonymous Open never does.
        open_as(&reg, &new, false).await;
        open_as(&reg, &DiallerId::default(), false).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!current.is_closed() && !anonymous.is_closed() && !unnumbered.is_closed());
        assert_eq!((reg.session_count(), reg.superseded_count()), (7, 1));
    }

    #[tokio::test]
    async fn a_superseded_session_s_cookies_are_revoked() {
        let reg = with_dead_timeout(Duration::from_secs(60));
        let old = DiallerId::new("client");
        let opened = reg.open_from(&named_open(&old), ip(1)).unwrap();
        open_as(&reg, &DiallerId::new("client"), false).await;
        let merge = resi::MergeRequest { cookie: opened.cookies[0].clone(), path_id: 0, ..Default::default() };
        let err = reg.merge(&merge, &ChannelBinding::default()).err().expect("a revoked cookie");
        assert_eq!((err.code, err.message.as_str()), (Code::Unauthenticated, "unknown merge cookie"));
    }

    #[tokio::test]
    async fn a_session_whose_path_dies_soon_after_the_new_open_is_ended_one_dead_timeout_later() {
        let reg = with_dead_timeout(Duration::from_millis(300));
        let (old, far) = open_as(&reg, &DiallerId::new("client"), true).await;
        open_as(&reg, &DiallerId::new("client"), false).await;
        assert!(!old.is_closed(), "a session with a live path is not ended at the Open");
        drop(far); // its dialler's socket closes only now
        let started = Instant::now();
        assert!(matches!(ended(&old).await, SessionError::Superseded { .. }));
        assert!(started.elapsed() < Duration::from_secs(2), "ended only after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn the_place_of_a_superseded_session_counts_for_the_new_one() {
        let reg = registry(OpenLimits { max_sessions: 1, ..OpenLimits::default() });
        let (old, _) = open_as(&reg, &DiallerId::new("client"), false).await;
        let err = reg.open_from(&named_open(&DiallerId::default()), ip(1)).unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted, "the hop is full");
        reg.open_from(&named_open(&DiallerId::new("client")), ip(1)).expect("the restarted dialler takes the old place");
        assert!(matches!(ended(&old).await, SessionError::Superseded { .. }));
    }

    #[tokio::test]
    async fn with_client_certificates_only_an_open_with_the_same_certificate_ends_a_session() {
        let reg = with_dead_timeout(Duration::from_secs(60));
        let (cert_a, cert_b) = (Some([1u8; 32]), Some([2u8; 32]));
        let old = reg.open_for(&named_open(&DiallerId::new("client")), cert_a, ip(1)).unwrap();
        let id: SessionId = old.session_id[..].try_into().unwrap();
        let old = reg.table().sessions.get(&id).unwrap().handle.clone();
        reg.open_for(&named_open(&DiallerId::new("client")), cert_b, ip(1)).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!old.is_closed(), "an Open with another certificate ended the session");
        reg.open_for(&named_open(&DiallerId::new("client")), cert_a, ip(1)).unwrap();
        assert!(matches!(ended(&old).await, SessionError::Superseded { .. }));
        assert_eq!(reg.superseded_count(), 1, "the session opened with certificate B is kept");
        assert_eq!(reg.session_count(), 2);
    }

    #[tokio::test]
    async fn a_malformed_dialler_identity_is_refused_and_opens_nothing() {
        let reg = with_dead_timeout(Duration::from_secs(60));
        let req = resi::OpenRequest { dialler: "client".into(), instance: Bytes::from_static(b"short"), ..open_req() };
        let err = reg.open_from(&req, ip(1)).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert_eq!(reg.session_count(), 0);
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
