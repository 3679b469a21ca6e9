//! The gateway configuration file.
//!
//! (Skeleton: parsing and validation are being written; the public types
//! below are the contract other modules use.)

use std::path::PathBuf;
use std::time::Duration;

use crate::session::{Mode, SessionConfig};

/// A whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages (None when built in code).
    pub source: Option<PathBuf>,
    pub tcp: Option<TcpConfig>,
    pub nkn: Option<NknConfig>,
    pub resi: ResiConfig,
}

/// `[Tcp]`: where this gateway listens and where it forwards.
#[derive(Debug, Clone, Default)]
pub struct TcpConfig {
    /// `Listen`: one or more `host:port`; each accepts ESI clients and RESI
    /// paths alike.
    pub listen: Vec<String>,
    /// `Address`: the upstream. One entry per TCP path; a plain upstream uses
    /// the first that answers.
    pub address: Vec<String>,
}

/// `[Nkn]`: parsed and kept for the NKN transport.
#[derive(Debug, Clone, Default)]
pub struct NknConfig {
    pub address: Option<String>,
    pub seed: Option<String>,
    pub subclients: u32,
}

/// `[Resi]`: session and gateway tuning.
#[derive(Debug, Clone)]
pub struct ResiConfig {
    pub mode: Mode,
    pub heartbeat_interval: Duration,
    pub dead_timeout: Duration,
    pub redial_max_backoff: Duration,
    pub resume_timeout: Duration,
    pub cookie_ttl: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
    pub max_message_size: usize,
    pub send_window: usize,
    pub name: String,
}

impl Default for ResiConfig {
    fn default() -> Self {
        let s = SessionConfig::default();
        ResiConfig {
            mode: s.mode,
            heartbeat_interval: s.heartbeat_interval,
            dead_timeout: s.dead_timeout,
            redial_max_backoff: s.redial_max_backoff,
            resume_timeout: s.resume_timeout,
            cookie_ttl: s.cookie_ttl,
            connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            max_message_size: 64 << 20,
            send_window: s.send_window,
            name: "resi".into(),
        }
    }
}

impl ResiConfig {
    /// The session parameters this gateway uses for sessions it opens or
    /// accepts.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            mode: self.mode,
            heartbeat_interval: self.heartbeat_interval,
            dead_timeout: self.dead_timeout,
            redial_max_backoff: self.redial_max_backoff,
            resume_timeout: self.resume_timeout,
            cookie_ttl: self.cookie_ttl,
            send_window: self.send_window,
            max_frame: (self.max_message_size + 64 * 1024).max(1 << 20),
        }
    }
}
