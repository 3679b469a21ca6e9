//! The dialling side of a session: merges one path per address into a
//! session opened through `Modify`, and keeps redialling the paths it loses.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{oneshot, watch};

use super::driver::{self, NewPath, Role};
use super::{Mode, SessionConfig, SessionError, SessionHandle, SessionStream};
use crate::cookie::SessionId;
use crate::grpc::{Code, Status};
use crate::path::{HelloFn, PathDialer, TcpDialer};
use crate::tls::{merge_binding, ChannelBinding};
use crate::proto::{esi, resi, REDUNDANCY_EXTENSION_ID};

/// First redial delay; doubles up to `SessionConfig::redial_max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The Open request a gateway sends (inside Modify) to ask for a session;
/// it names the dialler (`cfg.dialler`, empty when anonymous).
pub fn open_request(cfg: &SessionConfig, paths: usize) -> resi::OpenRequest {
    resi::OpenRequest {
        version: super::registry::VERSION,
        mode: cfg.mode.to_wire(),
        cookies: paths.clamp(1, 16) as u32,
        dialler: cfg.dialler.name.clone(),
        instance: cfg.dialler.instance.clone(),
    }
}

/// Wraps a redundancy message in the `Modify` request that carries it.
pub fn modify_request(msg: resi::redundancy::Msg) -> esi::ModifyRequest {
    esi::ModifyRequest {
        ext: Some(esi::Extension {
            id: REDUNDANCY_EXTENSION_ID,
            pass: false,
            data: resi::Redundancy { msg: Some(msg) }.encode_to_vec().into(),
        }),
    }
}

/// Reads the redundancy message out of a `Modify` response.
pub fn redundancy_answer(resp: &esi::ModifyResponse) -> Result<resi::redundancy::Msg, Status> {
    let ext = resp.ext.as_ref().filter(|e| e.id == REDUNDANCY_EXTENSION_ID);
    let ext = ext.ok_or_else(|| Status::new(Code::Internal, "Modify answer lacks the redundancy extension"))?;
    resi::Redundancy::decode(ext.data.clone())
        .ok()
        .and_then(|r| r.msg)
        .ok_or_else(|| Status::new(Code::Internal, "undecodable redundancy answer"))
}

/// Joins one TCP path per address to the session `opened` describes and
/// keeps redialling lost ones (see [`connect`]).
pub async fn connect_tcp(
    opened: resi::OpenResponse,
    addrs: Vec<String>,
    cfg: SessionConfig,
) -> Result<(SessionStream, SessionHandle), SessionError> {
    let dialers = addrs.into_iter().map(|addr| Box::new(TcpDialer { addr, tls: None }) as Box<dyn PathDialer>).collect();
    connect(opened, dialers, cfg).await
}

/// Joins one path per dialler (path id = its index) to the session
/// `opened` describes and keeps redialling lost ones. Returns once a path
/// is merged, or fails if none could be merged in time.
pub async fn connect(
    opened: resi::OpenResponse,
    dialers: Vec<Box<dyn PathDialer>>,
    cfg: SessionConfig,
) -> Result<(SessionStream, SessionHandle), SessionError> {
    connect_paths(opened, None, dialers, cfg).await
}

/// Opens a session over one path, for a transport without HTTP/2 (NKN
/// alone): the HELLO carries the `Open`, the path becomes path 0, and the
/// other dialers (ids 1..) merge as usual.
pub async fn open_on_path(
    first: Box<dyn PathDialer>,
    more: Vec<Box<dyn PathDialer>>,
    cfg: SessionConfig,
) -> Result<(SessionStream, SessionHandle), SessionError> {
    let open = open_request(&cfg, 1 + more.len());
    let hello: Bytes = modify_request(resi::redundancy::Msg::Open(open)).encode_to_vec().into();
    let hello: HelloFn = Box::new(move |_: &ChannelBinding| hello);
    let timeout = (cfg.dead_timeout * 2).max(Duration::from_secs(5));
    let (conn, reply) = first.dial(hello, timeout).await.map_err(|e| SessionError::Unreachable(e.to_string()))?;
    let opened = match hello_answer(reply).map_err(SessionError::Refused)? {
        resi::redundancy::Msg::Opened(o) => o,
        _ => return Err(SessionError::Protocol("the answer to an Open is not `opened`".into())),
    };
    let mut dialers = vec![first];
    dialers.extend(more);
    connect_paths(opened, Some(conn), dialers, cfg).await
}

async fn connect_paths(
    opened: resi::OpenResponse,
    first_conn: Option<NewPath>,
    dialers: Vec<Box<dyn PathDialer>>,
    cfg: SessionConfig,
) -> Result<(SessionStream, SessionHandle), SessionError> {
    let mut id: SessionId = [0; 16];
    let n = opened.session_id.len().min(16);
    id[..n].copy_from_slice(&opened.session_id[..n]);
    let ttl = Duration::from_millis(opened.cookie_ttl_ms.max(1000) as u64);
    let mut cfg = cfg;
    // The acceptor answers the mode in force; our own configured mode is a
    // floor too: an acceptor answering weaker than we asked is run strict
    // anyway (protocol §3.1).
    let answered = Mode::from_wire(opened.mode);
    let mode = cfg.mode.stricter(answered);
    if mode != answered {
        tracing::warn!(asked = ?cfg.mode, ?answered, "the acceptor answered a weaker mode than ours; running strict");
    }
    cfg.mode = mode;
    let (stream, handle) = driver::spawn(cfg.clone(), Role::Dialer { cookies: opened.cookies, ttl }, id);
    // If this future is dropped before it returns, nobody else can close
    // the session (and so stop its diallers): the guard does.
    let guard = CloseOnDrop(Some(handle.clone()));
    let (merged_tx, mut merged_rx) = watch::channel(0usize);
    let mut first_conn = first_conn;
    for (i, transport) in dialers.into_iter().enumerate() {
        let dialer = Dialer {
            path: i as u32,
            transport,
            handle: handle.clone(),
            cfg: cfg.clone(),
            merged: merged_tx.clone(),
        };
        // Path 0 of a session opened on a path is already joined.
        let joined = if i == 0 { first_conn.take() } else { None }.map(|conn| {
            let (tx, rx) = oneshot::channel();
            handle.add_path(0, conn, Some(tx));
            merged_tx.send_modify(|n| *n += 1);
            Attempt::Joined(rx)
        });
        tokio::spawn(dialer.run(joined));
    }
    drop(merged_tx);
    let first = merged_rx.wait_for(|n| *n > 0);
    let timeout = cfg.resume_timeout.min(Duration::from_secs(10));
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, first) => match r {
            Ok(Ok(_)) => Ok((stream, handle)),
            _ => {
                handle.close();
                Err(SessionError::Unreachable(format!("no path merged within {timeout:?}")))
            }
        },
        reason = handle.closed() => Err(reason),
    };
    if result.is_ok() {
        guard.disarm();
    }
    result
}

/// Closes a session when dropped, unless disarmed.
struct CloseOnDrop(Option<SessionHandle>);

impl CloseOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.close();
        }
    }
}

/// Keeps one path of a session connected.
struct Dialer {
    path: u32,
    transport: Box<dyn PathDialer>,
    handle: SessionHandle,
    cfg: SessionConfig,
    merged: watch::Sender<usize>,
}

enum Attempt {
    /// Merged; resolves when the session lets go of the path.
    Joined(oneshot::Receiver<()>),
    /// Try again at once (with another cookie).
    Retry,
    /// Try again after the backoff.
    Backoff,
    /// The session is over.
    Stop,
}

impl Dialer {
    async fn run(self, mut first: Option<Attempt>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = match first.take() {
                Some(a) => a,
                None => tokio::select! {
                    a = self.attempt() => a,
                    _ = self.handle.closed() => return,
                },
            };
            match attempt {
                Attempt::Joined(gone) => {
                    backoff = FIRST_BACKOFF;
                    tokio::select! {
                        _ = gone => {}
                        _ = self.handle.closed() => return,
                    }
                    tracing::info!(path = self.path, to = %self.transport.describe(), "path lost; redialling");
                }
                Attempt::Retry => continue,
                Attempt::Backoff => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.handle.closed() => return,
                    }
                    backoff = (backoff * 2).min(self.cfg.redial_max_backoff);
                }
                Attempt::Stop => return,
            }
        }
    }

    async fn attempt(&self) -> Attempt {
        let Some(cookie) = self.handle.take_cookie() else {
            // No cookie until a live path brings fresh ones.
            return Attempt::Backoff;
        };
        let hello = merge_hello(cookie.clone(), self.path);
        let timeout = (self.cfg.dead_timeout * 2).max(Duration::from_secs(1));
        let (conn, reply) = match self.transport.dial(hello, timeout).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(path = self.path, to = %self.transport.describe(), error = %e, "dial failed");
                // The cookie may not have reached the peer: keep it.
                self.handle.give_back_cookie(cookie);
                return Attempt::Backoff;
            }
        };
        match merge_answer(reply) {
            Ok(merged) => {
                self.handle.cookie_merged(merged.next_cookie);
                let (tx, rx) = oneshot::channel();
                self.handle.add_path(self.path, conn, Some(tx));
                self.merged.send_modify(|n| *n += 1);
                Attempt::Joined(rx)
            }
            Err(status) if matches!(status.code, Code::Unauthenticated | Code::PermissionDenied) => {
                tracing::info!(path = self.path, %status, "merge cookie refused; trying another");
                self.handle.cookie_spent();
                Attempt::Retry
            }
            Err(status) if status.code == Code::NotFound => {
                tracing::warn!(path = self.path, %status, "session gone at the peer");
                self.handle.cookie_spent();
                self.handle.close();
                Attempt::Stop
            }
            Err(status) => {
                tracing::warn!(path = self.path, %status, "merge refused");
                self.handle.give_back_cookie(cookie);
                Attempt::Backoff
            }
        }
    }
}

/// The HELLO of a merge: on a TLS connection it carries the binding of the
/// cookie to that connection (docs/protocol.md §3.3).
fn merge_hello(cookie: Bytes, path_id: u32) -> HelloFn {
    Box::new(move |channel: &ChannelBinding| {
        let binding = channel.exporter.map(|e| merge_binding(&cookie, &e).to_vec()).unwrap_or_default();
        let merge = resi::MergeRequest { cookie, path_id, binding: binding.into() };
        modify_request(resi::redundancy::Msg::Merge(merge)).encode_to_vec().into()
    })
}

fn merge_answer(reply: Bytes) -> Result<resi::MergeResponse, Status> {
    match hello_answer(reply)? {
        resi::redundancy::Msg::Merged(m) => Ok(m),
        _ => Err(Status::new(Code::Internal, "HELLO_REPLY is not a merge answer")),
    }
}

/// The redundancy answer in a HELLO_REPLY, or the status it carries.
fn hello_answer(reply: Bytes) -> Result<resi::redundancy::Msg, Status> {
    let reply = resi::HelloReply::decode(reply).map_err(|e| Status::new(Code::Internal, format!("bad HELLO_REPLY: {e}")))?;
    match reply.result {
        Some(resi::hello_reply::Result::Response(body)) => {
            let resp = esi::ModifyResponse::decode(body).map_err(|e| Status::new(Code::Internal, e.to_string()))?;
            redundancy_answer(&resp)
        }
        Some(resi::hello_reply::Result::Error(s)) => Err(Status::new(Code::from_i32(s.code), s.message)),
        None => Err(Status::new(Code::Internal, "empty HELLO_REPLY")),
    }
}
