//! The redundant session: one reliable, ordered byte stream in each
//! direction, carried over every live path at once.
//!
//! - [`machine`]: the protocol state machine. It owns sequence numbers,
//!   acknowledgements, the send buffer, per-path cursors, the agreement
//!   buffer (strict/permissive delivery), heartbeats and the live-path set.
//!   It never touches a socket or reads a clock: the caller feeds it frames
//!   and the current time and asks it what to send and deliver.
//! - [`control`]: CONTROL messages and the dialler's merge cookies (the
//!   machine's cookie policy).
//! - [`driver`]: runs one machine on tokio: one future per session that
//!   owns every path's transport, and [`SessionStream`], the
//!   `AsyncRead + AsyncWrite` face that HTTP/2 runs over, reading and
//!   writing the machine under the session's one lock.
//! - [`registry`]: the accepting side: sessions by cookie, path handshakes.
//! - [`admission`]: what unauthenticated Opens may cost the accepting side.
//! - [`restart`]: who a dialler is, so that a restarted one frees the
//!   sessions its previous run left behind.
//! - [`client`]: the dialling side: open, merge every path, redial.
//! - [`paths`]: the dialling side's record of every configured path (for
//!   the statistics: where it goes, why it is down).

pub mod admission;
pub mod client;
pub mod control;
pub mod driver;
pub mod machine;
pub mod paths;
pub mod registry;
pub mod restart;

use std::time::Duration;

pub use driver::{SessionHandle, SessionStream};
pub use restart::DiallerId;

/// How copies arriving over several paths become one delivered stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Deliver a byte only once every live path has carried an identical
    /// copy of it.
    #[default]
    Strict,
    /// Deliver the first copy; later copies are checked while they are still
    /// buffered and then dropped.
    Permissive,
}

impl Mode {
    /// The stricter of two modes: the mode in force when each end's own
    /// configured mode is a floor (protocol §3.1).
    pub fn stricter(self, other: Mode) -> Mode {
        if self == Mode::Strict || other == Mode::Strict {
            Mode::Strict
        } else {
            Mode::Permissive
        }
    }

    /// From the wire's `resi.Mode` (`MODE_UNSPECIFIED` and unknown values
    /// mean strict).
    pub fn from_wire(mode: i32) -> Mode {
        match crate::proto::resi::Mode::try_from(mode) {
            Ok(crate::proto::resi::Mode::Permissive) => Mode::Permissive,
            _ => Mode::Strict,
        }
    }

    /// As the wire's `resi.Mode` (never `MODE_UNSPECIFIED`).
    pub fn to_wire(self) -> i32 {
        match self {
            Mode::Strict => crate::proto::resi::Mode::Strict as i32,
            Mode::Permissive => crate::proto::resi::Mode::Permissive as i32,
        }
    }
}

/// Session parameters (from `[Resi]` in the configuration).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mode: Mode,
    /// How often each side sends a PING on each path.
    pub heartbeat_interval: Duration,
    /// A path from which nothing arrived for this long is dead.
    pub dead_timeout: Duration,
    /// Cap of the dialler's exponential redial backoff.
    pub redial_max_backoff: Duration,
    /// How long a session with no live path waits for one to come back.
    pub resume_timeout: Duration,
    /// Lifetime of a merge cookie.
    pub cookie_ttl: Duration,
    /// Bytes the sender may have unacknowledged (also bounds the receiver's
    /// buffers).
    pub send_window: usize,
    /// Largest frame accepted on a path.
    pub max_frame: usize,
    /// Who this end is when it dials (sent in its Opens; anonymous by
    /// default). A gateway sets it at each start from `[Resi] Name`.
    pub dialler: DiallerId,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            mode: Mode::Strict,
            heartbeat_interval: Duration::from_millis(200),
            dead_timeout: Duration::from_millis(1000),
            redial_max_backoff: Duration::from_secs(2),
            resume_timeout: Duration::from_secs(30),
            cookie_ttl: Duration::from_secs(60),
            send_window: 16 << 20,
            max_frame: 1 << 20,
            dialler: DiallerId::default(),
        }
    }
}

/// How the status message of a call that failed for want of a live path
/// starts (documented in docs/python.md).
pub const NO_LIVE_PATH: &str = "no live path:";

/// Why a session ended or could not be set up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("copies of the stream differ at byte {offset} (strict mode): session failed closed")]
    Mismatch { offset: u64 },
    #[error("no path came back within {0:?}")]
    ResumeTimeout(Duration),
    #[error("handshake refused: {0}")]
    Refused(crate::grpc::Status),
    #[error("peer closed the session: {0}")]
    PeerClosed(String),
    /// The peer ended the session with `DATA_LOSS`: its copies disagreed.
    #[error("copies of the stream differ at the peer (strict mode): session failed closed: {0}")]
    PeerMismatch(String),
    #[error("session closed locally")]
    Closed,
    /// Acceptor: the dialler `dialler` restarted, and its new run opened
    /// session `by` while this one had no live path (§3.1).
    #[error("dialler {dialler:?} restarted (its new session is {by}): the old session is ended")]
    Superseded { dialler: String, by: String },
    /// The dialler has no merge cookie left (and no attempt out that could
    /// bring one) while no path is live: it can never rejoin (§8.5).
    #[error("no merge cookie left and no live path: the session cannot be rejoined")]
    OutOfCookies,
    #[error("could not reach any path: {0}")]
    Unreachable(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl SessionError {
    /// Whether the session failed because copies of its stream disagreed
    /// (here or at the peer): calls on it end with `DATA_LOSS`.
    pub fn is_data_loss(&self) -> bool {
        matches!(self, SessionError::Mismatch { .. } | SessionError::PeerMismatch(_))
    }

    /// The gRPC status for a call that failed because this session failed
    /// with copies that disagreed (None for any other ending).
    pub fn data_loss_status(&self) -> Option<crate::grpc::Status> {
        self.is_data_loss().then(|| {
            let why = format!("the redundant copies disagreed, so the session failed closed: {self}");
            crate::grpc::Status::new(crate::grpc::Code::DataLoss, why)
        })
    }
}
