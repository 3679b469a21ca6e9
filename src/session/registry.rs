//! The accepting side of sessions. (Skeleton; being written.)

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{SessionConfig, SessionStream};
use crate::grpc::Status;
use crate::proto::resi;

/// Sessions this gateway accepted, found by cookie.
pub struct SessionRegistry {
    _cfg: SessionConfig,
}

impl SessionRegistry {
    /// A registry; every session that becomes established is handed out on
    /// the receiver, to be served as an HTTP/2 server connection.
    pub fn new(cfg: SessionConfig) -> (Arc<SessionRegistry>, mpsc::Receiver<SessionStream>) {
        let (_tx, rx) = mpsc::channel(16);
        (Arc::new(SessionRegistry { _cfg: cfg }), rx)
    }

    /// Handles a redundancy `Open` (from a Modify call): creates a session
    /// waiting for its paths and returns its cookies.
    pub fn open(&self, _req: &resi::OpenRequest) -> Result<resi::OpenResponse, Status> {
        unimplemented!("skeleton")
    }

    /// Serves one accepted TCP connection that starts with the RESI path
    /// preface (not yet consumed): handshake, then frames until it closes.
    pub async fn accept_tcp_path(self: &Arc<Self>, _stream: TcpStream) {
        unimplemented!("skeleton")
    }

    /// Closes every session (gateway shutdown).
    pub fn close_all(&self) {}
}
