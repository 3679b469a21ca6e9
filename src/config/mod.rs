//! The gateway configuration file.
//!
//! The file is TOML and compatible with the original RESI gateway:
//!
//! ```toml
//! [Tcp]
//! Address = "127.0.0.1:9000"   # where this gateway forwards over TCP
//! Listen  = "localhost:4001"   # where it accepts ESI (and RESI) connections
//! [Nkn]
//! Address = "919c54b3…"        # NKN address of the next gateway
//! Seed    = "039e4812…"        # this gateway's NKN identity (ed25519 seed, hex)
//! Subclients = 4
//! [Resi]
//! Mode = "strict"              # or "permissive"
//! ```
//!
//! Section and key names are matched case-insensitively, and `_`/`-` in them
//! are ignored, so `[Resi] HeartbeatInterval`, `[resi] heartbeat_interval`
//! and `heartbeat-interval` name the same key (Python builds configurations
//! from snake_case keyword arguments through [`Config::from_table`]).
//!
//! Unknown sections and keys are errors (they are usually typos), with a
//! "did you mean" hint when a known name is close. Every error is a
//! [`ConfigError`] whose message names the file, the key (`[Section] Key`,
//! with the list index where relevant) and the problem.
//!
//! Reference of every key (defaults in brackets):
//!
//! | key | value |
//! | --- | --- |
//! | `[Tcp] Listen` | `"host:port"` or a list of them; port 0 picks a free port |
//! | `[Tcp] Address` | upstream `"host:port"` or a list; each entry is one TCP path |
//! | `[Nkn] Address` | NKN address of the next gateway: `[identifier.]` + 64 hex digits |
//! | `[Nkn] Seed` | this gateway's NKN identity: 64 hex digits (ed25519 seed) |
//! | `[Nkn] Subclients` | NKN sub-clients, 1..=64 \[4\] |
//! | `[Nkn] RpcServers` | seed RPC `"http://host:port"` or a list \[the public NKN seeds\] |
//! | `[Nkn] AllowedPeers` | NKN addresses whose HELLOs are answered, or a list \[any\] |
//! | `[Tls] Cert` | PEM file: this gateway's certificate chain (TLS on `Listen`; client certificate upstream) |
//! | `[Tls] Key` | PEM file: the private key of `Cert` |
//! | `[Tls] ClientCa` | PEM file: the listener requires client certificates signed by it |
//! | `[Tls] UpstreamCa` | PEM file: TLS to `[Tcp] Address`, verified against this CA |
//! | `[Tls] ServerName` | name checked in the upstream's certificate \[the host of each address\] |
//! | `[Tls] PlainListen` | `true`: `Listen` stays plain, `Cert` only serves upstream \[false\] |
//! | `[Resi] Mode` | `"strict"` or `"permissive"` \[strict\]; a floor: a session runs strict if either end is strict |
//! | `[Resi] Name` | this gateway's name in logs and hop info \["resi"\] |
//! | `[Resi] HeartbeatInterval` | duration \[200ms\] |
//! | `[Resi] DeadTimeout` | duration, > HeartbeatInterval \[1s\] |
//! | `[Resi] RedialMaxBackoff` | duration \[2s\] |
//! | `[Resi] ResumeTimeout` | duration \[30s\] |
//! | `[Resi] CookieTtl` | duration \[60s\] |
//! | `[Resi] ConnectTimeout` | duration \[5s\] |
//! | `[Resi] ShutdownGrace` | duration \[10s\] |
//! | `[Resi] MaxMessageSize` | bytes, 1 KiB..=1 GiB \[64 MiB\] |
//! | `[Resi] SendWindow` | bytes, 64 KiB..=1 GiB \[16 MiB\] |
//! | `[Resi] OpenTimeout` | duration: a session with no path merged this long after its Open is removed \[5s\] |
//! | `[Resi] MaxSessions` | established sessions accepted, 1..=1000000 \[1024\] |
//! | `[Resi] MaxPendingSessions` | sessions awaiting their first path, 1..=1000000 \[256\] |
//! | `[Resi] MaxPendingPerPeer` | pending sessions per peer address, 1..=1000000 \[16\] |
//! | `[Resi] OpenRatePerPeer` | Opens per second per peer address, 0 (unlimited)..=1000000 \[20\] |
//! | `[Reverse] Listen` | `"host:port"` or a list: ESI clients here call the far side over the reverse channel |
//! | `[Reverse] Address` | `"host:port"` or a list: the local ESI server that serves calls coming back |
//! | `[Resi] HandshakeTimeout` | duration, 100ms..=10m \[5s\]: sniff + HTTP/2 preface and SETTINGS, or RESI preface and HELLO |
//! | `[Resi] IdleTimeout` | duration, 1s..=24h \[5m\]: an ESI connection with no open call is closed (GOAWAY) |
//! | `[Resi] MaxConnections` | integer, 1..=1000000 \[10000\], lowered to the open-file limit less 64 |
//! | `[Resi] Threads` | worker threads of `resi gateway`, 1..=1024 \[half the CPUs, at least 1\]; 1 runs the gateway on its main thread alone |
//! | `[Resi] BusyPoll` | duration, 0..=1s \[250us\]: with `Threads = 1`, how long `resi gateway` polls instead of sleeping after a call through it started, was answered or relayed a piece of its body; 0: never |
//! | `[Metrics] Listen` | `"host:port"`: serve Prometheus metrics over HTTP at `/metrics` here \[none: off\] |
//!
//! Durations are strings with a unit (`"250ms"`, `"1s"`, `"1.5s"`, `"2m"`,
//! `"1h"`, `"500us"`) or plain numbers meaning seconds. Byte sizes are
//! integers or strings with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`, `"16MB"`).
//! File names in `[Tls]` are relative to the configuration file's folder
//! (to the working directory when there is no file); they are read and
//! checked at load, so a missing or bad file is a [`ConfigError`].

//!
//! # How a file is read
//!
//! 1. TOML is parsed into a table (a syntax error names line and column).
//! 2. `names` rewrites every section and key name to its canonical form
//!    and reports unknown or doubled names (with a "did you mean" hint).
//! 3. Serde deserialises the canonical table into the section structs
//!    below; every value goes through a deserialiser of `values` that
//!    says precisely what was wrong. A bad value (or a bad list entry) is
//!    reported and dropped and the rest deserialised again, so one load
//!    finds every bad value.
//! 4. `[Tls]` files are loaded, then `checks` applies the rules that span
//!    keys (skipping keys that already have an error).
//!
//! [`Config::check_file`] returns every error found ([`Config::from_file`]
//! the first). Adding a key is adding a field (with its `deserialize_with`
//! and its default) to its section struct; adding a section is adding a
//! struct, its field in `Sections` and its line in `schema`.

mod checks;
mod names;
mod summary;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::{Table, Value};

use crate::session::registry::OpenLimits;
use crate::session::{DiallerId, Mode, SessionConfig};
use crate::tls::{TlsFiles, TlsSettings};

pub use checks::is_loopback_listen;
pub use values::{
    check_host_port, check_nkn_address, fmt_duration, fmt_size, mode_name, parse_duration, parse_mode, parse_size,
};

/// A whole configuration, validated. `Config { tcp: ..., ..Config::default() }`
/// builds one in code (the default has no section: it is not a runnable
/// gateway until it has a listen address and an upstream).
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file it came from, for messages (None when built in code).
    pub source: Option<PathBuf>,
    pub tcp: Option<TcpConfig>,
    pub nkn: Option<NknConfig>,
    pub resi: ResiConfig,
    pub reverse: Option<ReverseConfig>,
    /// `[Tls]`, loaded (None: plain TCP everywhere).
    pub tls: Option<TlsSettings>,
    /// `[Metrics]` (None: no metrics endpoint).
    pub metrics: Option<MetricsConfig>,
}

/// `[Metrics]`: the Prometheus endpoint (off unless configured).
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// `Listen`: one `host:port` where `GET /metrics` is served (HTTP/1.1).
    pub listen: String,
}

/// `[Metrics]` as written (`Listen` is required when the section is there).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
struct MetricsSection {
    #[serde(deserialize_with = "values::one::<_, values::ListenAddr>")]
    listen: Option<String>,
}

/// `[Reverse]`: calls in the other direction, over the reverse channel a
/// client gateway opens on its session (see `docs/protocol.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct ReverseConfig {
    /// `Listen` (used by a gateway that accepts sessions): ESI clients that
    /// connect here are carried back to the gateway that dialled.
    #[serde(deserialize_with = "values::list::<_, values::ListenAddr>")]
    pub listen: Vec<String>,
    /// `Address` (used by a gateway that dials a session): the local ESI
    /// server (first that connects) that serves calls coming back.
    #[serde(deserialize_with = "values::list::<_, values::UpstreamAddr>")]
    pub address: Vec<String>,
}

/// `[Tcp]`: where this gateway listens and where it forwards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct TcpConfig {
    /// `Listen`: one or more `host:port`; each accepts ESI clients and RESI
    /// paths alike.
    #[serde(deserialize_with = "values::list::<_, values::ListenAddr>")]
    pub listen: Vec<String>,
    /// `Address`: the upstream. One entry per TCP path; a plain upstream uses
    /// the first that answers.
    #[serde(deserialize_with = "values::list::<_, values::UpstreamAddr>")]
    pub address: Vec<String>,
}

/// `[Nkn]`: parsed and kept for the NKN transport.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct NknConfig {
    #[serde(deserialize_with = "values::one::<_, values::NknAddress>")]
    pub address: Option<String>,
    /// `Seed`, lower case.
    #[serde(deserialize_with = "values::one::<_, values::NknSeed>")]
    pub seed: Option<String>,
    #[serde(deserialize_with = "values::subclients")]
    pub subclients: u32,
    /// `RpcServers`: seed JSON-RPC servers (`http://host:port`); empty means
    /// the public NKN seeds.
    #[serde(deserialize_with = "values::list::<_, values::HttpUrl>")]
    pub rpc_servers: Vec<String>,
    /// `AllowedPeers`: NKN addresses (lower case) whose HELLOs are
    /// answered; empty means any.
    #[serde(deserialize_with = "values::list::<_, values::NknPeer>")]
    pub allowed_peers: Vec<String>,
}

impl Default for NknConfig {
    fn default() -> Self {
        NknConfig {
            address: None,
            seed: None,
            subclients: DEFAULT_NKN_SUBCLIENTS,
            rpc_servers: Vec::new(),
            allowed_peers: Vec::new(),
        }
    }
}

/// `[Resi]`: session and gateway tuning. Durations are given to their
/// deserialiser in milliseconds (`duration::<_, MIN, MAX>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResiConfig {
    #[serde(deserialize_with = "values::mode")]
    pub mode: Mode,
    #[serde(deserialize_with = "values::name")]
    pub name: String,
    #[serde(deserialize_with = "values::duration::<_, 10, 60_000>")]
    pub heartbeat_interval: Duration,
    #[serde(deserialize_with = "values::duration::<_, 20, 600_000>")]
    pub dead_timeout: Duration,
    #[serde(deserialize_with = "values::duration::<_, 10, 600_000>")]
    pub redial_max_backoff: Duration,
    #[serde(deserialize_with = "values::duration::<_, 100, 86_400_000>")]
    pub resume_timeout: Duration,
    #[serde(deserialize_with = "values::duration::<_, 1_000, 86_400_000>")]
    pub cookie_ttl: Duration,
    #[serde(deserialize_with = "values::duration::<_, 10, 600_000>")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "values::duration::<_, 0, 3_600_000>")]
    pub shutdown_grace: Duration,
    #[serde(deserialize_with = "values::size::<_, 1024, 1_073_741_824>")]
    pub max_message_size: usize,
    #[serde(deserialize_with = "values::size::<_, 65_536, 1_073_741_824>")]
    pub send_window: usize,
    #[serde(deserialize_with = "values::duration::<_, 100, 3_600_000>")]
    pub open_timeout: Duration,
    #[serde(deserialize_with = "values::count::<_, _, 1, 1_000_000>")]
    pub max_sessions: usize,
    #[serde(deserialize_with = "values::count::<_, _, 1, 1_000_000>")]
    pub max_pending_sessions: usize,
    #[serde(deserialize_with = "values::count::<_, _, 1, 1_000_000>")]
    pub max_pending_per_peer: usize,
    #[serde(deserialize_with = "values::count::<_, _, 0, 1_000_000>")]
    pub open_rate_per_peer: u32,
    /// `HandshakeTimeout`: how long a new connection may take to identify
    /// itself (see `docs/protocol.md`, "Handshake deadline").
    #[serde(deserialize_with = "values::duration::<_, 100, 600_000>")]
    pub handshake_timeout: Duration,
    /// `IdleTimeout`: an ESI client connection without an open call for
    /// this long is closed with GOAWAY.
    #[serde(deserialize_with = "values::duration::<_, 1_000, 86_400_000>")]
    pub idle_timeout: Duration,
    /// `MaxConnections`: accepted TCP connections served at once.
    #[serde(deserialize_with = "values::count::<_, _, 1, 1_000_000>")]
    pub max_connections: usize,
    /// `Threads`: the tokio worker threads `resi gateway` runs on; with 1,
    /// a current-thread runtime on the main thread (a gateway started from
    /// Python shares its process's runtime instead).
    #[serde(deserialize_with = "values::count::<_, _, 1, MAX_THREADS>")]
    pub threads: usize,
    /// `BusyPoll`: how long `resi gateway` keeps polling instead of
    /// sleeping after a call through it started, was answered or relayed a
    /// piece of its body (with
    /// `Threads = 1`; zero: never). See [`crate::busy_poll`].
    #[serde(deserialize_with = "values::duration::<_, 0, 1_000>")]
    pub busy_poll: Duration,
}

/// `[Tls]` as written: file names, resolved against the configuration's
/// folder and loaded after deserialisation (into [`TlsSettings`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
struct TlsSection {
    #[serde(deserialize_with = "values::one::<_, values::NonEmpty>")]
    cert: Option<String>,
    #[serde(deserialize_with = "values::one::<_, values::NonEmpty>")]
    key: Option<String>,
    #[serde(deserialize_with = "values::one::<_, values::NonEmpty>")]
    client_ca: Option<String>,
    #[serde(deserialize_with = "values::one::<_, values::NonEmpty>")]
    upstream_ca: Option<String>,
    #[serde(deserialize_with = "values::one::<_, values::NonEmpty>")]
    server_name: Option<String>,
    #[serde(deserialize_with = "values::boolean")]
    plain_listen: bool,
}

/// The file's sections, in the order messages list them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase", deny_unknown_fields)]
struct Sections {
    tcp: Option<TcpConfig>,
    nkn: Option<NknConfig>,
    resi: Option<ResiConfig>,
    reverse: Option<ReverseConfig>,
    tls: Option<TlsSection>,
    metrics: Option<MetricsSection>,
}

/// Every section with its keys, canonical names as serde knows them.
fn schema() -> Vec<(&'static str, &'static [&'static str])> {
    names::field_names::<Sections>()
        .iter()
        .map(|s| {
            let keys = match *s {
                "Tcp" => names::field_names::<TcpConfig>(),
                "Nkn" => names::field_names::<NknConfig>(),
                "Resi" => names::field_names::<ResiConfig>(),
                "Reverse" => names::field_names::<ReverseConfig>(),
                "Tls" => names::field_names::<TlsSection>(),
                "Metrics" => names::field_names::<MetricsSection>(),
                _ => &[],
            };
            (*s, keys)
        })
        .collect()
}

impl Default for ResiConfig {
    fn default() -> Self {
        let s = SessionConfig::default();
        let limits = OpenLimits::default();
        ResiConfig {
            mode: s.mode,
            name: "resi".into(),
            heartbeat_interval: s.heartbeat_interval,
            dead_timeout: s.dead_timeout,
            redial_max_backoff: s.redial_max_backoff,
            resume_timeout: s.resume_timeout,
            cookie_ttl: s.cookie_ttl,
            connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            max_message_size: 64 << 20,
            send_window: s.send_window,
            open_timeout: limits.open_timeout,
            max_sessions: limits.max_sessions,
            max_pending_sessions: limits.max_pending,
            max_pending_per_peer: limits.max_pending_per_peer,
            open_rate_per_peer: limits.open_rate_per_peer,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            threads: default_threads(),
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

/// `[Resi] BusyPoll` unless set (docs/performance.md, "Busy polling").
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(250);

/// The most worker threads a gateway (or a Python process) may run.
pub(crate) const MAX_THREADS: u64 = 1024;

/// Half the CPUs, at least one. A gateway moves bytes between sockets and
/// waits on them: on a machine it shares with its ESI server or its peer
/// gateway, more workers mostly wake each other (measured in
/// docs/performance.md, "What bounds it").
pub(crate) fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

impl ResiConfig {
    /// The session parameters this gateway uses for sessions it opens or
    /// accepts. The dialler is anonymous here: its instance is drawn at
    /// each start ([`crate::gateway::Gateway::start`] names it `Name`).
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
            dialler: DiallerId::default(),
        }
    }

    /// What unauthenticated Opens may cost this gateway as an acceptor.
    pub fn open_limits(&self) -> OpenLimits {
        OpenLimits {
            open_timeout: self.open_timeout,
            max_sessions: self.max_sessions,
            max_pending: self.max_pending_sessions,
            max_pending_per_peer: self.max_pending_per_peer,
            open_rate_per_peer: self.open_rate_per_peer,
        }
    }
}

/// Default number of NKN sub-clients.
pub const DEFAULT_NKN_SUBCLIENTS: u32 = 4;

/// The configuration file of the original gateway, with its (elided) NKN
/// identity filled in. It loads unchanged.
pub const EXAMPLE: &str = r#"[Tcp]
Address = "127.0.0.1:9000"   # where this gateway forwards over TCP
Listen  = "localhost:4001"   # where it accepts ESI (and RESI) connections
[Nkn]
Address = "919c54b3a1d1e8f0ad64b0a6e3e86b7fa8d6d5d8b7cd7e6cfd1f4c6f4f0e3b2a"  # NKN address of the next gateway
Seed    = "039e481266e5a05168c1d834a94db512dbc235877f150c5a3cc1e3903672c673"  # this gateway's NKN identity (ed25519 seed, hex)
Subclients = 4
[Resi]
Mode = "strict"              # or "permissive"
"#;

// ---------------------------------------------------------------------------
// Errors

/// Why a configuration was rejected. The message always starts with the
/// origin (file name, or a name given by the caller such as `<dict>`);
/// [`ConfigError::origin`] and [`ConfigError::key`] give origin and key
/// apart.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A key (or the file as a whole) has a bad, missing or unknown value.
    Invalid {
        origin: String,
        /// `[Section] Key` (with `[index]` for list entries), or `[Section]`,
        /// or None for the file as a whole.
        key: Option<String>,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { origin, source } => {
                write!(f, "{origin}: cannot read the file: {source}")
            }
            ConfigError::Syntax {
                origin,
                line,
                column,
                message,
            } => {
                write!(f, "{origin}: line {line}, column {column}: invalid TOML: {message}")
            }
            ConfigError::Invalid {
                origin,
                key: Some(key),
                message,
            } => write!(f, "{origin}: {key}: {message}"),
            ConfigError::Invalid {
                origin,
                key: None,
                message,
            } => write!(f, "{origin}: {message}"),
        }
    }
}

impl ConfigError {
    /// The file name (or caller-given origin) the error is about.
    pub fn origin(&self) -> &str {
        match self {
            ConfigError::Read { origin, .. }
            | ConfigError::Syntax { origin, .. }
            | ConfigError::Invalid { origin, .. } => origin,
        }
    }

    /// The key the error is about, as `[Section] Key`, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

/// The errors found so far in one configuration, in the order found.
struct Problems {
    origin: String,
    errors: Vec<ConfigError>,
    /// Keys (`[Section] Key`) known to be wrong, beyond those of `errors`:
    /// a misspelt name stands for the key it resembles.
    marked: Vec<String>,
}

impl Problems {
    fn new(origin: &str) -> Problems {
        Problems { origin: origin.to_string(), errors: Vec::new(), marked: Vec::new() }
    }

    fn add(&mut self, key: Option<String>, message: impl Into<String>) {
        let origin = self.origin.clone();
        self.errors.push(ConfigError::Invalid { origin, key, message: message.into() });
    }

    fn mark(&mut self, key: String) {
        self.marked.push(key);
    }

    /// Whether `key` (`[Section] Key`, or `[Section]` for anything in it)
    /// already has an error.
    fn has(&self, key: &str) -> bool {
        let about = |k: &str| k == key || k.starts_with(&format!("{key}[")) || k.starts_with(&format!("{key} "));
        self.marked.iter().any(|k| about(k)) || self.errors.iter().any(|e| e.key().is_some_and(about))
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<ConfigError>> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.errors)
        }
    }
}

// ---------------------------------------------------------------------------
// Loading

impl Config {
    /// Reads and validates a configuration file; the first error if it is
    /// bad. Messages name the file as `path` was given.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::check_file(path).map_err(first)
    }

    /// Reads and validates a configuration file, returning every error
    /// found (at least one) if it is bad (what `resi check-config` shows).
    pub fn check_file(path: impl AsRef<Path>) -> Result<Config, Vec<ConfigError>> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| vec![ConfigError::Read { origin: origin.clone(), source }])?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let mut cfg = load(parse_toml(&text, &origin)?, &origin, base, stem.as_deref())?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text; `origin` names it in messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        load(parse_toml(text, origin).map_err(first)?, origin, None, None).map_err(first)
    }

    /// Validates an already parsed table (e.g. built from a Python dict),
    /// exactly as a file's; `origin` names it in messages.
    pub fn from_table(table: Table, origin: &str) -> Result<Config, ConfigError> {
        load(table, origin, None, None).map_err(first)
    }

    /// Validates a `[Tls]` table alone (for clients from Python); file
    /// names are relative to the working directory.
    pub fn tls_from_table(table: Table, origin: &str) -> Result<TlsSettings, ConfigError> {
        let mut p = Problems::new(origin);
        let mut wrapped = Table::new();
        wrapped.insert("Tls".into(), Value::Table(table));
        let sections: Sections = deserialize(names::normalise(wrapped, &schema(), &mut p), &mut p);
        let tls = load_tls(sections.tls.unwrap_or_default(), None, &mut p);
        p.finish(tls).map_err(first).map(|t| t.expect("loaded when there is no error"))
    }

    /// Addresses to listen on (`[Tcp] Listen`).
    pub fn listen(&self) -> &[String] {
        self.tcp.as_ref().map(|t| t.listen.as_slice()).unwrap_or(&[])
    }

    /// Upstream TCP addresses (`[Tcp] Address`), one per path.
    pub fn upstream_tcp(&self) -> &[String] {
        self.tcp.as_ref().map(|t| t.address.as_slice()).unwrap_or(&[])
    }

    /// Upstream NKN address (`[Nkn] Address`).
    pub fn upstream_nkn(&self) -> Option<&str> {
        self.nkn.as_ref().and_then(|n| n.address.as_deref())
    }

    /// The session parameters (shorthand for `self.resi.session_config()`).
    pub fn session_config(&self) -> SessionConfig {
        self.resi.session_config()
    }

    /// Warnings to show loudly at start (`resi gateway` and `resi
    /// check-config` print them on stderr, the gateway logs them at WARN):
    /// listen addresses beyond loopback without TLS, an upstream that is
    /// this gateway itself, and two paths or listeners on one address.
    pub fn warnings(&self) -> Vec<String> {
        checks::warnings(self)
    }
}

fn first(mut errors: Vec<ConfigError>) -> ConfigError {
    errors.swap_remove(0)
}

/// TOML text to a table; a syntax error gives line and column.
fn parse_toml(text: &str, origin: &str) -> Result<Table, Vec<ConfigError>> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        vec![ConfigError::Syntax {
            origin: origin.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }]
    })
}

/// The whole pipeline on a parsed table; `[Tls]` file names are relative
/// to `base`; `stem` (the file's name without extension) is the default
/// `[Resi] Name`.
fn load(table: Table, origin: &str, base: Option<&Path>, stem: Option<&str>) -> Result<Config, Vec<ConfigError>> {
    let mut p = Problems::new(origin);
    let table = names::normalise(table, &schema(), &mut p);
    let sections: Sections = deserialize(table.clone(), &mut p);
    let tls = sections.tls.and_then(|t| load_tls(t, base, &mut p));
    let metrics = sections.metrics.and_then(|m| load_metrics(m, &mut p));
    let mut cfg = Config {
        source: None,
        tcp: sections.tcp,
        nkn: sections.nkn,
        resi: sections.resi.unwrap_or_default(),
        reverse: sections.reverse,
        tls,
        metrics,
    };
    let name_given = table.get("Resi").and_then(Value::as_table).is_some_and(|t| t.contains_key("Name"));
    if !name_given {
        cfg.resi.name = default_name(stem, &cfg);
    }
    checks::errors(&cfg, &table, &mut p);
    p.finish(cfg)
}

/// `[Metrics]`: `Listen` is the section's one key and is required.
fn load_metrics(m: MetricsSection, p: &mut Problems) -> Option<MetricsConfig> {
    match m.listen {
        Some(listen) => Some(MetricsConfig { listen }),
        None => {
            if !p.has("[Metrics] Listen") {
                p.add(Some("[Metrics] Listen".into()), "missing: [Metrics] needs the \"host:port\" to serve /metrics on");
            }
            None
        }
    }
}

/// `[Resi] Name` when not given: the file's name, else the first listen
/// address, else "resi".
fn default_name(stem: Option<&str>, c: &Config) -> String {
    let name = stem.map(str::to_string).or_else(|| c.listen().first().cloned());
    name.filter(|n| !n.trim().is_empty() && n.len() <= 64 && !n.chars().any(char::is_control))
        .unwrap_or_else(|| "resi".into())
}

/// Deserialises the canonical table; each bad value is reported, removed,
/// and the rest deserialised again, so every bad value is found (a bad
/// list entry is removed alone, so its siblings are checked too).
fn deserialize(mut table: Table, p: &mut Problems) -> Sections {
    // The original index of each entry still in a list, per `[Section] Key`.
    let mut entries: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    loop {
        let e = match serde_path_to_error::deserialize::<_, Sections>(Value::Table(table.clone())) {
            Ok(sections) => return sections,
            Err(e) => e,
        };
        let at = ErrorAt::of(e.path());
        let message = e.inner().message().to_string();
        let (Some(section), key) = (at.section, at.key) else {
            p.add(None, message);
            return Sections::default();
        };
        let Some(key) = key else {
            p.add(Some(format!("[{section}]")), message);
            table.remove(&section);
            continue;
        };
        let shown = format!("[{section}] {key}");
        let Some(values) = table.get_mut(&section).and_then(Value::as_table_mut) else {
            return Sections::default();
        };
        let list = values.get_mut(&key).and_then(Value::as_array_mut);
        match (at.index, list) {
            (Some(i), Some(list)) if list.len() > 1 && i < list.len() => {
                let original = entries.entry(shown.clone()).or_insert_with(|| (0..list.len()).collect());
                p.add(Some(format!("{shown}[{}]", original[i])), message);
                original.remove(i);
                list.remove(i);
            }
            (index, _) => {
                let suffix = index.map(|i| format!("[{}]", entries.get(&shown).and_then(|o| o.get(i).copied()).unwrap_or(i))).unwrap_or_default();
                p.add(Some(format!("{shown}{suffix}")), message);
                values.remove(&key);
            }
        }
    }
}

/// Where in the table a deserialisation error is: section, key and list
/// index (as the path serde walked).
struct ErrorAt {
    section: Option<String>,
    key: Option<String>,
    index: Option<usize>,
}

impl ErrorAt {
    fn of(path: &serde_path_to_error::Path) -> ErrorAt {
        use serde_path_to_error::Segment;
        let mut at = ErrorAt { section: None, key: None, index: None };
        for segment in path.iter() {
            match segment {
                Segment::Map { key } if at.section.is_none() => at.section = Some(key.clone()),
                Segment::Map { key } if at.key.is_none() => at.key = Some(key.clone()),
                Segment::Seq { index } if at.key.is_some() && at.index.is_none() => at.index = Some(*index),
                _ => {}
            }
        }
        at
    }
}

/// `[Tls]`: file names resolved against `base`, read and checked now.
/// None when a key is bad (reported) or the files do not load (reported).
fn load_tls(t: TlsSection, base: Option<&Path>, p: &mut Problems) -> Option<TlsSettings> {
    if p.has("[Tls]") {
        return None;
    }
    let path = |name: Option<String>| {
        name.map(|n| match base {
            Some(base) => base.join(n),
            None => PathBuf::from(n),
        })
    };
    let files = TlsFiles {
        cert: path(t.cert),
        key: path(t.key),
        client_ca: path(t.client_ca),
        upstream_ca: path(t.upstream_ca),
        server_name: t.server_name,
        plain_listen: t.plain_listen,
    };
    TlsSettings::load(files)
        .map_err(|e| p.add(Some(format!("[Tls] {}", e.key)), e.error.to_string()))
        .ok()
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while pos > 0 && !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "919c54b3a1d1e8f0ad64b0a6e3e86b7fa8d6d5d8b7cd7e6cfd1f4c6f4f0e3b2a";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "gateway.toml")
    }

    fn err(text: &str) -> String {
        match load(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const TCP: &str = "[Tcp]\nAddress = \"127.0.0.1:9000\"\nListen = \"localhost:4001\"\n";

    #[test]
    fn original_example_loads_unchanged() {
        let c = load(EXAMPLE).unwrap();
        let t = c.tcp.as_ref().unwrap();
        assert_eq!(t.address, vec!["127.0.0.1:9000"]);
        assert_eq!(t.listen, vec!["localhost:4001"]);
        let n = c.nkn.as_ref().unwrap();
        assert_eq!(n.address.as_deref(), Some(HEX));
        assert_eq!(n.subclients, 4);
        assert!(n.seed.is_some());
        assert_eq!(c.resi.mode, Mode::Strict);
        assert!(c.resi.dead_timeout <= Duration::from_secs(1));
        assert_eq!(c.resi.redial_max_backoff, Duration::from_secs(2));
    }

    #[test]
    fn metrics_section() {
        let c = load(&format!("{TCP}[metrics]\nlisten = \"127.0.0.1:0\"\n")).unwrap();
        assert_eq!(c.metrics.unwrap().listen, "127.0.0.1:0");
        let e = load(&format!("{TCP}[Metrics]\nListen = \"nowhere\"\n")).unwrap_err();
        assert_eq!(e.key(), Some("[Metrics] Listen"));
        assert!(e.to_string().starts_with("gateway.toml: [Metrics] Listen: expected \"host:port\""), "{e}");
        let e = load(&format!("{TCP}[Metrics]\n")).unwrap_err();
        assert!(e.to_string().contains("[Metrics] Listen: missing"), "{e}");
        let e = load(&format!("{TCP}[Metrics]\nAddress = \"127.0.0.1:1\"\n")).unwrap_err();
        assert!(e.to_string().contains("[Metrics] Address: unknown key"), "{e}");
        let e = load(&format!("{TCP}[Metric]\nListen = \"127.0.0.1:1\"\n")).unwrap_err();
        assert!(e.to_string().contains("did you mean [Metrics]"), "{e}");
    }

    #[test]
    fn name_defaults_to_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("end-gw.toml");
        std::fs::write(&path, TCP).unwrap();
        assert_eq!(Config::from_file(&path).unwrap().resi.name, "end-gw");
        std::fs::write(&path, format!("{TCP}[Resi]\nname = \"given\"\n")).unwrap();
        assert_eq!(Config::from_file(&path).unwrap().resi.name, "given");
        let nkn_only = format!("[Nkn]\nSeed = \"{HEX}\"\nAddress = \"{HEX}\"\n");
        assert_eq!(load(&nkn_only).unwrap().resi.name, "resi", "no file, no listen address");
    }

    #[test]
    fn defaults() {
        let c = load(TCP).unwrap();
        assert!(c.nkn.is_none());
        assert_eq!(c.resi.mode, Mode::Strict);
        assert_eq!(c.resi.name, "localhost:4001", "no Name, no file: the first listen address");
        assert!(c.metrics.is_none(), "metrics are off by default");
        assert!(c.resi.dead_timeout > c.resi.heartbeat_interval);
        assert_eq!(c.resi.max_message_size, 64 << 20);
        let n = load(&format!("{TCP}[Nkn]\nAddress = \"{HEX}\"\n")).unwrap();
        assert_eq!(n.nkn.unwrap().subclients, DEFAULT_NKN_SUBCLIENTS);
    }

    #[test]
    fn case_insensitive_names() {
        let c = load(
            "[tcp]\naddress = \"127.0.0.1:9000\"\nLISTEN = \"127.0.0.1:0\"\n[resi]\nmode = \"PERMISSIVE\"\nheartbeat_interval = \"50ms\"\ndead-timeout = 0.5\n",
        )
        .unwrap();
        assert_eq!(c.resi.mode, Mode::Permissive);
        assert_eq!(c.resi.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.resi.dead_timeout, Duration::from_millis(500));
    }

    #[test]
    fn lists_of_paths() {
        let c = load(
            "[Tcp]\nListen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nAddress = [\"127.0.0.1:9000\", \"[::1]:9001\"]\n",
        )
        .unwrap();
        assert_eq!(c.listen().len(), 2);
        assert_eq!(c.upstream_tcp(), ["127.0.0.1:9000", "[::1]:9001"]);
    }

    #[test]
    fn connection_limits() {
        let c = load(&format!("{TCP}[Resi]\nHandshakeTimeout = \"750ms\"\nIdleTimeout = \"2m\"\nMaxConnections = 64\n")).unwrap();
        assert_eq!(c.resi.handshake_timeout, Duration::from_millis(750));
        assert_eq!(c.resi.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.resi.max_connections, 64);
        let d = load(TCP).unwrap();
        assert_eq!((d.resi.handshake_timeout, d.resi.idle_timeout, d.resi.max_connections), (Duration::from_secs(5), Duration::from_secs(300), 10_000));
        assert_eq!(
            err(&format!("{TCP}[Resi]\nMaxConnections = 0\n")),
            "gateway.toml: [Resi] MaxConnections: 0 is out of range (allowed: 1 to 1000000)"
        );
        assert!(err(&format!("{TCP}[Resi]\nMaxConnections = \"many\"\n")).contains("expected an integer (1 to 1000000), got a string"));
        assert_eq!(load(&format!("{TCP}[Resi]\nThreads = 3\n")).unwrap().resi.threads, 3);
        assert!(d.resi.threads >= 1, "half the CPUs, at least one");
        assert_eq!(
            err(&format!("{TCP}[Resi]\nThreads = 0\n")),
            "gateway.toml: [Resi] Threads: 0 is out of range (allowed: 1 to 1024)"
        );
        assert_eq!(d.resi.busy_poll, Duration::from_micros(250));
        assert_eq!(load(&format!("{TCP}[Resi]\nBusyPoll = \"0s\"\n")).unwrap().resi.busy_poll, Duration::ZERO);
        assert_eq!(load(&format!("{TCP}[Resi]\nbusy-poll = \"1ms\"\n")).unwrap().resi.busy_poll, Duration::from_millis(1));
        assert_eq!(
            err(&format!("{TCP}[Resi]\nBusyPoll = \"2s\"\n")),
            "gateway.toml: [Resi] BusyPoll: 2s is out of range (allowed: 0ms to 1s)"
        );
        let one = load(&format!("{TCP}[Resi]\nThreads = 1\n")).unwrap().summary();
        assert!(one.contains("threads: 1, busy poll: 250us"), "{one}");
        let two = load(&format!("{TCP}[Resi]\nThreads = 2\nBusyPoll = \"1ms\"\n")).unwrap().summary();
        assert!(two.contains("busy poll: 1ms (not used: Threads > 1)"), "{two}");
        let tiny = load(&format!("{TCP}[Resi]\nThreads = 1\nBusyPoll = \"500ns\"\n")).unwrap().summary();
        assert!(tiny.contains("busy poll: 500ns"), "{tiny}");
        let off = load(&format!("{TCP}[Resi]\nBusyPoll = 0\n")).unwrap().summary();
        assert!(off.contains("busy poll: off"), "{off}");
        assert!(err(&format!("{TCP}[Resi]\nHandshakeTimeout = \"10ms\"\n")).contains("[Resi] HandshakeTimeout: 10ms is out of range"));
        assert_eq!(
            err(&format!("{TCP}[Resi]\nIdleTimeout = \"25h\"\n")),
            "gateway.toml: [Resi] IdleTimeout: 90000s is out of range (allowed: 1s to 86400s)"
        );
    }

    #[test]
    fn durations_and_sizes() {
        let c = load(&format!(
            "{TCP}[Resi]\nHeartbeatInterval = \"250ms\"\nDeadTimeout = \"1.5s\"\nResumeTimeout = \"2m\"\nCookieTtl = 90\nShutdownGrace = 0\nMaxMessageSize = \"16MiB\"\nSendWindow = \"64KiB\"\n"
        ))
        .unwrap();
        let r = &c.resi;
        assert_eq!(r.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(r.dead_timeout, Duration::from_millis(1500));
        assert_eq!(r.resume_timeout, Duration::from_secs(120));
        assert_eq!(r.cookie_ttl, Duration::from_secs(90));
        assert_eq!(r.shutdown_grace, Duration::ZERO);
        assert_eq!(r.max_message_size, 16 << 20);
        assert_eq!(r.send_window, 64 << 10);
        let c = load(&format!(
            "{TCP}[Resi]\nMaxMessageSize = 1073741824\nSendWindow = \"1GiB\"\n"
        ))
        .unwrap();
        assert_eq!(c.resi.max_message_size, 1 << 30);
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_size("16MB").unwrap(), 16_000_000);
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_size(16 << 20), "16MiB");
    }

    #[test]
    fn reverse_section() {
        let c = load(&format!(
            "{TCP}[reverse]\nlisten = [\"127.0.0.1:7001\", \"[::1]:0\"]\nADDRESS = \"127.0.0.1:50051\"\n"
        ))
        .unwrap();
        let r = c.reverse.as_ref().unwrap();
        assert_eq!(r.listen, vec!["127.0.0.1:7001", "[::1]:0"]);
        assert_eq!(r.address, vec!["127.0.0.1:50051"]);
        let summary = c.summary();
        assert!(summary.contains("[Reverse] listen: 127.0.0.1:7001, [::1]:0"), "{summary}");
        assert!(summary.contains("local server: 127.0.0.1:50051"), "{summary}");
        assert!(load(TCP).unwrap().reverse.is_none());
        assert_eq!(
            err(&format!("{TCP}[Reverse]\nListn = \"127.0.0.1:0\"\n")),
            "gateway.toml: [Reverse] Listn: unknown key (did you mean Listen?)"
        );
        assert_eq!(
            err(&format!("{TCP}[Reverse]\nMode = \"strict\"\n")),
            "gateway.toml: [Reverse] Mode: unknown key in [Reverse] (it is a key of [Resi])"
        );
        assert!(err(&format!("{TCP}[Reverse]\nAddress = \"nohost\"\n")).starts_with("gateway.toml: [Reverse] Address: "));
        assert!(err(&format!("{TCP}[Reverse]\nListen = []\n")).starts_with("gateway.toml: [Reverse] Listen: expected at least one"));
        assert_eq!(
            err(&format!("{TCP}[Reverse]\nListen = [\"127.0.0.1:7\", 7]\n")),
            "gateway.toml: [Reverse] Listen[1]: expected \"host:port\", got an integer (7)"
        );
        assert_eq!(
            err(&format!("{TCP}[Revers]\nListen = \"127.0.0.1:0\"\n")),
            "gateway.toml: [Revers]: unknown section (did you mean [Reverse]?)"
        );
    }

    #[test]
    fn open_limits() {
        let r = load(TCP).unwrap().resi.open_limits();
        assert_eq!((r.open_timeout, r.max_sessions, r.max_pending, r.max_pending_per_peer, r.open_rate_per_peer), (Duration::from_secs(5), 1024, 256, 16, 20));
        let c = load(&format!(
            "{TCP}[Resi]\nOpenTimeout = \"2s\"\nMaxSessions = 10\nMaxPendingSessions = 5\nMaxPendingPerPeer = 2\nOpenRatePerPeer = 0\n"
        ))
        .unwrap();
        let r = c.resi.open_limits();
        assert_eq!((r.open_timeout, r.max_sessions, r.max_pending, r.max_pending_per_peer, r.open_rate_per_peer), (Duration::from_secs(2), 10, 5, 2, 0));
        assert_eq!(
            err(&format!("{TCP}[Resi]\nMaxPendingPerPeer = 0\n")),
            "gateway.toml: [Resi] MaxPendingPerPeer: 0 is out of range (allowed: 1 to 1000000)"
        );
        assert!(err(&format!("{TCP}[Resi]\nOpenRatePerPeer = \"fast\"\n")).contains("[Resi] OpenRatePerPeer: expected an integer (0 to 1000000), got a string"));
    }

    #[test]
    fn unknown_keys_and_sections_with_hints() {
        assert_eq!(
            err(&format!("{TCP}[Resi]\nMod = \"strict\"\n")),
            "gateway.toml: [Resi] Mod: unknown key (did you mean Mode?)"
        );
        assert_eq!(
            err(&format!("{TCP}[Resi]\nHeartbeatIntervall = \"1s\"\n")),
            "gateway.toml: [Resi] HeartbeatIntervall: unknown key (did you mean HeartbeatInterval?)"
        );
        assert_eq!(
            err(&format!("{TCP}[Resii]\nMode = \"strict\"\n")),
            "gateway.toml: [Resii]: unknown section (did you mean [Resi]?)"
        );
        assert!(err(&format!("{TCP}[Logging]\nLevel = \"x\"\n"))
            .contains("[Logging]: unknown section (known sections"));
        assert_eq!(
            err(&format!("{TCP}[Resi]\nSeed = \"00\"\n")),
            "gateway.toml: [Resi] Seed: unknown key in [Resi] (it is a key of [Nkn])"
        );
        assert!(err(&format!("Mode = \"strict\"\n{TCP}")).contains("Mode: unknown top-level key"));
        assert!(err(&format!("{TCP}[Resi]\nFoo = 1\n"))
            .contains("[Resi] Foo: unknown key (known keys of [Resi]: Mode, Name"));
    }

    #[test]
    fn doubled_names() {
        assert!(err("[Tcp]\nListen = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\nAddress = \"127.0.0.1:3\"\n")
            .starts_with("gateway.toml: [Tcp] Listen: given twice"));
        assert!(err(&format!("{TCP}[Resi]\n[resi]\n"))
            .starts_with("gateway.toml: [Resi]: section given twice"));
    }

    #[test]
    fn bad_mode() {
        assert_eq!(
            err(&format!("{TCP}[Resi]\nMode = \"fast\"\n")),
            "gateway.toml: [Resi] Mode: expected \"strict\" or \"permissive\", got \"fast\""
        );
        assert!(err(&format!("{TCP}[Resi]\nMode = 1\n"))
            .contains("[Resi] Mode: expected \"strict\" or \"permissive\", got an integer"));
    }

    #[test]
    fn bad_addresses() {
        let bad = |v: &str| err(&format!("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = {v}\n"));
        assert!(bad("\"127.0.0.1\"").starts_with(
            "gateway.toml: [Tcp] Address: expected \"host:port\", got \"127.0.0.1\" (no port)"
        ));
        assert!(bad("\"127.0.0.1:99999\"").starts_with("gateway.toml: [Tcp] Address: port 99999"));
        assert!(bad("\"127.0.0.1:http\"").contains("[Tcp] Address: expected \"host:port\", got \"127.0.0.1:http\" (port \"http\" is not a number)"));
        assert!(bad("\"127.0.0.1:0\"").contains("[Tcp] Address: port 0"));
        assert!(bad("[\"127.0.0.1:1\", \"x:y\"]")
            .starts_with("gateway.toml: [Tcp] Address[1]: expected \"host:port\""));
        assert!(bad("[\"127.0.0.1:1\", 5]").starts_with(
            "gateway.toml: [Tcp] Address[1]: expected \"host:port\", got an integer (5)"
        ));
        assert!(bad("[]").contains("[Tcp] Address: expected at least one"));
        assert!(bad("4001").contains(
            "[Tcp] Address: expected \"host:port\" or a list of them, got an integer (4001)"
        ));
        assert!(bad("\"::1:80\"").contains("brackets"));
        assert!(bad("\":80\"").contains("(no host)"));
        assert!(err(
            "[Tcp]\nListen = [\"127.0.0.1:5\", \"127.0.0.1:5\"]\nAddress = \"127.0.0.1:1\"\n"
        )
        .contains("[Tcp] Listen[1]: \"127.0.0.1:5\" is listed twice"));
    }

    #[test]
    fn bad_nkn() {
        assert!(err(&format!("{TCP}[Nkn]\nAddress = \"919c54b3…\"\n"))
            .starts_with("gateway.toml: [Nkn] Address: expected an NKN address"));
        load(&format!("{TCP}[Nkn]\nAddress = \"esi.{HEX}\"\n")).unwrap();
        assert!(err(&format!("{TCP}[Nkn]\nAddress = \".{HEX}\"\n")).contains("empty identifier"));
        assert!(err(&format!("{TCP}[Nkn]\nSeed = \"abcd\"\n"))
            .starts_with("gateway.toml: [Nkn] Seed: expected a seed of 64 hex digits, got \"abcd\" (has 4 characters)"));
        assert!(err(&format!("{TCP}[Nkn]\nSubclients = 0\n"))
            .contains("[Nkn] Subclients: expected 1 to 64 sub-clients, got 0"));
        assert!(err(&format!("{TCP}[Nkn]\nSubclients = 65\n")).contains("[Nkn] Subclients"));
        assert!(err(&format!("{TCP}[Nkn]\nSubclients = \"4\"\n"))
            .contains("[Nkn] Subclients: expected an integer"));
    }

    #[test]
    fn bad_durations_and_sizes() {
        let r = |body: &str| err(&format!("{TCP}[Resi]\n{body}\n"));
        assert!(r("HeartbeatInterval = \"fast\"")
            .starts_with("gateway.toml: [Resi] HeartbeatInterval: expected a duration"));
        assert!(r("HeartbeatInterval = \"5 parsecs\"").contains("unknown duration unit"));
        assert!(r("HeartbeatInterval = -1")
            .contains("[Resi] HeartbeatInterval: expected a duration, got -1 seconds"));
        assert!(r("HeartbeatInterval = \"1ms\"")
            .contains("[Resi] HeartbeatInterval: 1ms is out of range"));
        assert!(r("HeartbeatInterval = true").contains("got a boolean"));
        assert_eq!(
            r("HeartbeatInterval = \"500ms\"\nDeadTimeout = \"400ms\""),
            "gateway.toml: [Resi] DeadTimeout: 400ms must be longer than [Resi] HeartbeatInterval (500ms)"
        );
        assert!(r("HeartbeatInterval = \"2s\"").starts_with(
            "gateway.toml: [Resi] HeartbeatInterval: 2s must be shorter than [Resi] DeadTimeout"
        ));
        assert!(r("MaxMessageSize = \"2GiB\"")
            .contains("[Resi] MaxMessageSize: 2GiB is out of range (allowed: 1KiB to 1GiB)"));
        assert!(r("MaxMessageSize = \"lots\"").contains("[Resi] MaxMessageSize: expected a size"));
        assert!(r("SendWindow = 10").contains("[Resi] SendWindow: 10B is out of range"));
        assert!(r("SendWindow = \"16 furlongs\"").contains("unknown size unit"));
        assert!(r("Name = \"\"").contains("[Resi] Name: expected a non-empty name"));
    }

    #[test]
    fn structure_errors() {
        assert_eq!(
            err("[Resi]\nMode = \"strict\"\n"),
            "gateway.toml: needs at least one of the sections [Tcp] and [Nkn]"
        );
        assert_eq!(
            err(""),
            "gateway.toml: needs at least one of the sections [Tcp] and [Nkn]"
        );
        assert!(err("[Tcp]\nAddress = \"127.0.0.1:9000\"\n")
            .starts_with("gateway.toml: [Tcp] Listen: missing"));
        assert!(err("[Tcp]\nListen = \"127.0.0.1:9000\"\n")
            .starts_with("gateway.toml: [Tcp] Address: missing"));
        assert!(err("Tcp = 5\n").contains("[Tcp]: expected a section (table), got an integer (5)"));
        // NKN identity and upstream alone make a gateway.
        let seed = "0".repeat(64);
        load(&format!("[Nkn]\nSeed = \"{seed}\"\nAddress = \"{HEX}\"\n")).unwrap();
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = load("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = 127.0.0.1:9000\n").unwrap_err();
        match &e {
            ConfigError::Syntax { line, column, .. } => {
                assert_eq!(*line, 3);
                assert!(*column >= 11, "column {column}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string().starts_with("gateway.toml: line 3, column "),
            "{e}"
        );
        let e = load("[Tcp\n").unwrap_err().to_string();
        assert!(e.starts_with("gateway.toml: line 1, column"), "{e}");
    }

    #[test]
    fn missing_file() {
        let e = Config::from_file("/nonexistent/gateway.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string()
                .starts_with("/nonexistent/gateway.toml: cannot read the file: "),
            "{e}"
        );
    }

    #[test]
    fn from_file_keeps_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gateway.toml");
        std::fs::write(&p, EXAMPLE).unwrap();
        let c = Config::from_file(&p).unwrap();
        assert_eq!(c.source.as_deref(), Some(p.as_path()));
        assert!(c.summary().contains("mode: strict"));
    }

    #[test]
    fn from_table_uses_origin() {
        let mut t = toml::Table::new();
        let mut tcp = toml::Table::new();
        tcp.insert("listen".into(), toml::Value::String("127.0.0.1:0".into()));
        tcp.insert("address".into(), toml::Value::String("127.0.0.1:1".into()));
        t.insert("tcp".into(), toml::Value::Table(tcp));
        let mut resi = toml::Table::new();
        resi.insert("mode".into(), toml::Value::String("fast".into()));
        t.insert("resi".into(), toml::Value::Table(resi.clone()));
        let e = Config::from_table(t.clone(), "<dict>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "<dict>: [Resi] Mode: expected \"strict\" or \"permissive\", got \"fast\""
        );
        assert_eq!(e.key(), Some("[Resi] Mode"));
        assert_eq!(e.origin(), "<dict>");
        resi.insert("mode".into(), toml::Value::String("permissive".into()));
        t.insert("resi".into(), toml::Value::Table(resi));
        assert_eq!(
            Config::from_table(t, "<dict>").unwrap().resi.mode,
            Mode::Permissive
        );
    }

    /// Every error of `text`, as displayed.
    fn all_errors(text: &str) -> Vec<String> {
        let table = parse_toml(text, "gateway.toml").map_err(|e| e[0].to_string()).unwrap();
        match super::load(table, "gateway.toml", None, None) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn warnings_of(text: &str) -> Vec<String> {
        load(text).unwrap().warnings()
    }

    #[test]
    fn every_error_at_once() {
        let mut got = all_errors(concat!(
            "[Tcp]\nListen = [\"127.0.0.1:5\", \"127.0.0.1:5\"]\nAdress = \"127.0.0.1:1\"\n",
            "[Resi]\nMode = \"fast\"\nHeartbeatInterval = \"soon\"\nMaxSessions = 0\n",
            "[Nkn]\nSeed = \"abcd\"\nRpcServers = [\"ftp://a\", \"http://b:1\", 7]\n",
            "[Resii]\n",
        ));
        got.sort();
        let want = [
            "gateway.toml: [Nkn] RpcServers[0]: expected an http:// URL, got \"ftp://a\"",
            "gateway.toml: [Nkn] RpcServers[2]: expected a string, got an integer (7)",
            "gateway.toml: [Nkn] Seed: expected a seed of 64 hex digits, got \"abcd\" (has 4 characters)",
            "gateway.toml: [Resi] HeartbeatInterval: expected a duration such as \"250ms\", \"1.5s\" or \"2m\", got \"soon\"",
            "gateway.toml: [Resi] MaxSessions: 0 is out of range (allowed: 1 to 1000000)",
            "gateway.toml: [Resi] Mode: expected \"strict\" or \"permissive\", got \"fast\"",
            "gateway.toml: [Resii]: unknown section (did you mean [Resi]?)",
            "gateway.toml: [Tcp] Adress: unknown key (did you mean Address?)",
            "gateway.toml: [Tcp] Listen[1]: \"127.0.0.1:5\" is listed twice",
        ];
        assert_eq!(got, want);
        // Values are checked in file order; rules across keys come last.
        // The first error is the one from_toml_str reports.
        let text = "[Tcp]\nListen = 5\n[Resi]\nMode = 1\n";
        let found = all_errors(text);
        assert_eq!(
            found,
            [
                "gateway.toml: [Tcp] Listen: expected \"host:port\" or a list of them, got an integer (5)",
                "gateway.toml: [Resi] Mode: expected \"strict\" or \"permissive\", got an integer (1)",
                "gateway.toml: [Tcp] Address: missing: a gateway needs an upstream to forward to ([Tcp] Address or [Nkn] Address)",
            ]
        );
        assert_eq!(err(text), found[0]);
    }

    #[test]
    fn no_missing_error_for_a_bad_or_misspelt_key() {
        assert_eq!(
            all_errors("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = \"nohost\"\n"),
            ["gateway.toml: [Tcp] Address: expected \"host:port\", got \"nohost\" (no port)"]
        );
        assert_eq!(
            all_errors("Tcp = 1\n"),
            ["gateway.toml: [Tcp]: expected a section (table), got an integer (1)"]
        );
        assert_eq!(
            all_errors("[Tcp]\nListen = [\"x\", \"127.0.0.1:1\", 2]\nAddress = \"127.0.0.1:1\"\n"),
            [
                "gateway.toml: [Tcp] Listen[0]: expected \"host:port\", got \"x\" (no port)",
                "gateway.toml: [Tcp] Listen[2]: expected \"host:port\", got an integer (2)",
            ]
        );
    }

    #[test]
    fn dates_are_refused() {
        assert_eq!(
            err(&format!("{TCP}[Resi]\nName = 1979-05-27\n")),
            "gateway.toml: [Resi] Name: got a date/time (1979-05-27), which no key takes"
        );
    }

    #[test]
    fn known_names_come_from_the_structs() {
        let schema = schema();
        let names: Vec<&str> = schema.iter().map(|(s, _)| *s).collect();
        assert_eq!(names, ["Tcp", "Nkn", "Resi", "Reverse", "Tls", "Metrics"]);
        let resi = schema.iter().find(|(s, _)| *s == "Resi").unwrap().1;
        assert_eq!(&resi[..3], ["Mode", "Name", "HeartbeatInterval"]);
        assert!(resi.contains(&"OpenRatePerPeer") && resi.contains(&"CookieTtl"));
        let tls = schema.iter().find(|(s, _)| *s == "Tls").unwrap().1;
        assert_eq!(tls, ["Cert", "Key", "ClientCa", "UpstreamCa", "ServerName", "PlainListen"]);
    }

    #[test]
    fn default_config_for_code() {
        let c = Config {
            tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec!["127.0.0.1:1".into()] }),
            ..Config::default()
        };
        assert_eq!(c.resi.name, "resi");
        assert_eq!(c.listen(), ["127.0.0.1:0"]);
        assert!(c.nkn.is_none() && c.tls.is_none() && c.reverse.is_none() && c.source.is_none());
        assert_eq!(NknConfig::default().subclients, DEFAULT_NKN_SUBCLIENTS);
        // The defaults of code and of an empty section agree.
        let file = load("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = \"127.0.0.1:1\"\n[Resi]\n[Nkn]\nAddress = \"919c54b3a1d1e8f0ad64b0a6e3e86b7fa8d6d5d8b7cd7e6cfd1f4c6f4f0e3b2a\"\n").unwrap();
        let named = ResiConfig { name: "127.0.0.1:0".into(), ..ResiConfig::default() };
        assert_eq!(format!("{:?}", file.resi), format!("{:?}", named), "only the name differs: the listen address");
        assert_eq!(file.nkn.unwrap().subclients, DEFAULT_NKN_SUBCLIENTS);
    }

    #[test]
    fn warns_about_forwarding_to_itself() {
        let w = warnings_of("[Tcp]\nListen = \"0.0.0.0:4001\"\nAddress = \"127.0.0.1:4001\"\n");
        assert!(w.iter().any(|m| m == "[Tcp] Address \"127.0.0.1:4001\" is this gateway's own [Tcp] Listen \"0.0.0.0:4001\": it would forward calls to itself"), "{w:?}");
        for (listen, address) in [("localhost:4001", "127.0.0.1:4001"), ("[::1]:4001", "localhost:4001"), ("[::]:4001", "[::1]:4001"), ("127.0.0.1:4001", "0.0.0.0:4001"), ("GW.example:4001", "gw.EXAMPLE:4001")] {
            let w = warnings_of(&format!("[Tcp]\nListen = \"{listen}\"\nAddress = \"{address}\"\n"));
            assert!(w.iter().any(|m| m.contains("forward calls to itself")), "{listen} {address}: {w:?}");
        }
        for (listen, address) in [("127.0.0.1:4001", "127.0.0.1:4002"), ("127.0.0.1:0", "127.0.0.1:4001"), ("127.0.0.2:4001", "127.0.0.1:4001"), ("0.0.0.0:4001", "10.1.2.3:4001")] {
            let w = warnings_of(&format!("[Tcp]\nListen = \"{listen}\"\nAddress = \"{address}\"\n"));
            assert!(!w.iter().any(|m| m.contains("itself")), "{listen} {address}: {w:?}");
        }
        let w = warnings_of(&format!("{TCP}[Reverse]\nAddress = \"localhost:4001\"\n"));
        assert!(w.iter().any(|m| m.starts_with("[Reverse] Address \"localhost:4001\" is this gateway's own [Tcp] Listen")), "{w:?}");
        // Its own NKN identity as its NKN upstream.
        let seed = "039e481266e5a05168c1d834a94db512dbc235877f150c5a3cc1e3903672c673";
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(seed, &mut bytes).unwrap();
        let own = crate::nkn::Identity::from_seed(bytes).public_key_hex();
        let w = warnings_of(&format!("{TCP}[Nkn]\nSeed = \"{seed}\"\nAddress = \"{own}\"\n"));
        assert!(w.iter().any(|m| m.starts_with("[Nkn] Address") && m.contains("own NKN identity")), "{w:?}");
        assert!(warnings_of(EXAMPLE).is_empty(), "{:?}", warnings_of(EXAMPLE));
    }

    #[test]
    fn warns_about_duplicate_paths() {
        let w = warnings_of("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = [\"127.0.0.1:9000\", \"127.0.0.1:9001\", \"localhost:9000\"]\n");
        assert_eq!(w, ["[Tcp] Address \"localhost:9000\" is the same address as [Tcp] Address \"127.0.0.1:9000\": two paths over the same route add no redundancy"]);
        let w = warnings_of("[Tcp]\nListen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nAddress = [\"127.0.0.1:9000\", \"127.0.0.1:9000\"]\n");
        assert_eq!(w.len(), 1, "{w:?}");
        let w = warnings_of("[Tcp]\nListen = [\"0.0.0.0:4001\", \"127.0.0.1:4001\"]\nAddress = \"127.0.0.1:9\"\n[Reverse]\nListen = \"localhost:4001\"\n");
        let same: Vec<_> = w.iter().filter(|m| m.contains("cannot be bound")).collect();
        assert_eq!(same.len(), 2, "{w:?}");
        assert!(same[0].starts_with("[Tcp] Listen \"127.0.0.1:4001\" is the same address as [Tcp] Listen \"0.0.0.0:4001\""), "{w:?}");
        assert!(same[1].starts_with("[Reverse] Listen \"localhost:4001\""), "{w:?}");
    }
}
