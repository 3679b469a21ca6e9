//! The accepting side of sessions: opens sessions, redeems merge cookies,
//! and hands each path that passes the handshake to its session.

use std::collections::HashMap;
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

/// Sessions one gateway accepts at most.
const MAX_SESSIONS: usize = 1024;
/// Protocol version spoken here.
pub const VERSION: u32 = 1;

/// Sessions this gateway accepted, found by cookie.
pub struct SessionRegistry {
    cfg: SessionConfig,
    jar: Arc<Mutex<CookieJar>>,
    sessions: Mutex<HashMap<SessionId, SessionHandle>>,
    new_sessions: mpsc::Sender<SessionStream>,
}

impl SessionRegistry {
    /// A registry; every session it opens is handed out on the receiver, to
    /// be served as an HTTP/2 server connection.
    pub fn new(cfg: SessionConfig) -> (Arc<SessionRegistry>, mpsc::Receiver<SessionStream>) {
        let (tx, rx) = mpsc::channel(64);
        let registry = SessionRegistry {
            cfg,
            jar: Arc::new(Mutex::new(CookieJar::default())),
            sessions: Mutex::new(HashMap::new()),
            new_sessions: tx,
        };
        (Arc::new(registry), rx)
    }

    /// Handles a redundancy `Open`: creates a session waiting for its paths
    /// and returns its cookies.
    pub fn open(self: &Arc<Self>, req: &resi::OpenRequest) -> Result<resi::OpenResponse, Status> {
        if req.version != VERSION {
            let msg = format!("RESI version {} is not supported (this hop speaks {VERSION})", req.version);
            return Err(Status::new(Code::FailedPrecondition, msg));
        }
        if self.sessions.lock().expect("sessions lock").len() >= MAX_SESSIONS {
            return Err(Status::new(Code::ResourceExhausted, "too many RESI sessions at this hop"));
        }
        let mut cfg = self.cfg.clone();
        cfg.mode = match resi::Mode::try_from(req.mode) {
            Ok(resi::Mode::Permissive) => Mode::Permissive,
            _ => Mode::Strict,
        };
        let id = new_session_id();
        let count = req.cookies.clamp(1, 16);
        let now = Instant::now();
        let cookies = {
            let mut jar = self.jar.lock().expect("cookie jar lock");
            (0..count).map(|_| jar.issue(id, cfg.cookie_ttl, now)).collect()
        };
        let role = Role::Acceptor { jar: self.jar.clone(), cookie_ttl: cfg.cookie_ttl };
        let (stream, handle) = driver::spawn(cfg.clone(), role, id);
        if self.new_sessions.try_send(stream).is_err() {
            handle.close();
            return Err(Status::new(Code::Unavailable, "this hop is not accepting sessions"));
        }
        self.sessions.lock().expect("sessions lock").insert(id, handle.clone());
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            let reason = handle.closed().await;
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
            mode: req.mode,
        })
    }

    fn forget(&self, id: &SessionId) {
        self.sessions.lock().expect("sessions lock").remove(id);
        self.jar.lock().expect("cookie jar lock").revoke_session(id);
    }

    /// Serves one accepted TCP connection that starts with the RESI path
    /// preface (not yet consumed): handshake, then hands it to its session.
    /// The preface and HELLO must arrive within `handshake_timeout`.
    pub async fn accept_tcp_path(self: &Arc<Self>, mut stream: TcpStream, handshake_timeout: Duration) {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let (read_buf, hello) = match tcp::accept(&mut stream, handshake_timeout).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(%peer, error = %e, "path handshake failed");
                return;
            }
        };
        let (reply, joined) = self.answer_hello(hello);
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
        match self.handle_hello(hello) {
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
    fn handle_hello(self: &Arc<Self>, hello: Bytes) -> Result<(Bytes, u32, SessionHandle), Status> {
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
                let mut opened = self.open(&open)?;
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
        let handle = self.sessions.lock().expect("sessions lock").get(&id).cloned();
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
        self.sessions.lock().expect("sessions lock").len()
    }

    /// Handles of the sessions alive now.
    pub fn sessions(&self) -> Vec<SessionHandle> {
        self.sessions.lock().expect("sessions lock").values().cloned().collect()
    }

    /// Closes every session (gateway shutdown).
    pub fn close_all(&self) {
        for handle in self.sessions() {
            handle.close();
        }
    }
}
