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
//! | `[Resi] Name` | this gateway's name in logs, metrics and hop info \[the configuration file's name without `.toml`; else the first `[Tcp] Listen` address; else "resi"\] |
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
//! | `[Metrics] Listen` | `"host:port"`: serve Prometheus metrics over HTTP at `/metrics` here \[none: off\] |
//!
//! Durations are strings with a unit (`"250ms"`, `"1s"`, `"1.5s"`, `"2m"`,
//! `"1h"`, `"500us"`) or plain numbers meaning seconds. Byte sizes are
//! integers or strings with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`, `"16MB"`).
//! File names in `[Tls]` are relative to the configuration file's folder
//! (to the working directory when there is no file); they are read and
//! checked at load, so a missing or bad file is a [`ConfigError`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::session::registry::OpenLimits;
use crate::session::{Mode, SessionConfig};
use crate::tls::{TlsFiles, TlsSettings};

/// A whole configuration, validated.
#[derive(Debug, Clone)]
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

/// `[Reverse]`: calls in the other direction, over the reverse channel a
/// client gateway opens on its session (see `docs/protocol.md`).
#[derive(Debug, Clone, Default)]
pub struct ReverseConfig {
    /// `Listen` (used by a gateway that accepts sessions): ESI clients that
    /// connect here are carried back to the gateway that dialled.
    pub listen: Vec<String>,
    /// `Address` (used by a gateway that dials a session): the local ESI
    /// server (first that connects) that serves calls coming back.
    pub address: Vec<String>,
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
    /// `RpcServers`: seed JSON-RPC servers (`http://host:port`); empty means
    /// the public NKN seeds.
    pub rpc_servers: Vec<String>,
    /// `AllowedPeers`: NKN addresses (lower case) whose HELLOs are
    /// answered; empty means any.
    pub allowed_peers: Vec<String>,
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
    pub open_timeout: Duration,
    pub max_sessions: usize,
    pub max_pending_sessions: usize,
    pub max_pending_per_peer: usize,
    pub open_rate_per_peer: u32,
    /// `HandshakeTimeout`: how long a new connection may take to identify
    /// itself (see `docs/protocol.md`, "Handshake deadline").
    pub handshake_timeout: Duration,
    /// `IdleTimeout`: an ESI client connection without an open call for
    /// this long is closed with GOAWAY.
    pub idle_timeout: Duration,
    /// `MaxConnections`: accepted TCP connections served at once.
    pub max_connections: usize,
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
            open_timeout: OpenLimits::default().open_timeout,
            max_sessions: OpenLimits::default().max_sessions,
            max_pending_sessions: OpenLimits::default().max_pending,
            max_pending_per_peer: OpenLimits::default().max_pending_per_peer,
            open_rate_per_peer: OpenLimits::default().open_rate_per_peer,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
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
/// origin (file name, or a name given by the caller such as `<dict>`).
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
                write!(
                    f,
                    "{origin}: line {line}, column {column}: invalid TOML: {message}"
                )
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

// ---------------------------------------------------------------------------
// Loading

impl Config {
    /// Reads and validates a configuration file. Messages name the file as
    /// `path` was given.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            origin: origin.clone(),
            source,
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let mut cfg = Parser { origin: &origin, base, stem: stem.as_deref() }.config(parse_toml(&text, &origin)?)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates TOML text; `origin` names it in messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Parser { origin, base: None, stem: None }.config(parse_toml(text, origin)?)
    }

    /// Validates an already parsed table (e.g. built from a Python dict);
    /// `origin` names it in messages.
    pub fn from_table(table: toml::Table, origin: &str) -> Result<Config, ConfigError> {
        Parser { origin, base: None, stem: None }.config(table)
    }

    /// Validates a `[Tls]` table alone (for clients from Python); file
    /// names are relative to the working directory.
    pub fn tls_from_table(table: toml::Table, origin: &str) -> Result<TlsSettings, ConfigError> {
        Parser { origin, base: None, stem: None }.tls(table)
    }

    /// Addresses to listen on (`[Tcp] Listen`).
    pub fn listen(&self) -> &[String] {
        self.tcp
            .as_ref()
            .map(|t| t.listen.as_slice())
            .unwrap_or(&[])
    }

    /// Upstream TCP addresses (`[Tcp] Address`), one per path.
    pub fn upstream_tcp(&self) -> &[String] {
        self.tcp
            .as_ref()
            .map(|t| t.address.as_slice())
            .unwrap_or(&[])
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
    /// listen addresses beyond loopback without TLS.
    pub fn warnings(&self) -> Vec<String> {
        if self.tls.as_ref().is_some_and(|t| t.listener.is_some()) {
            return Vec::new();
        }
        self.listen()
            .iter()
            .filter(|a| !is_loopback_listen(a))
            .map(|a| {
                format!(
                    "[Tcp] Listen {a:?} is reachable beyond loopback without TLS ([Tls] Cert): \
                     ESI calls and RESI paths on it are neither encrypted nor authenticated"
                )
            })
            .collect()
    }

    /// A human-readable summary (what `resi check-config` prints).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let origin = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        s.push_str(&format!("{origin}: OK\n"));
        if let Some(t) = &self.tcp {
            s.push_str(&format!("  [Tcp]  listen: {}\n", list_or_none(&t.listen)));
            s.push_str(&format!("         upstream: {}", list_or_none(&t.address)));
            if t.address.len() > 1 {
                s.push_str(&format!(" ({} paths)", t.address.len()));
            }
            s.push('\n');
        }
        if let Some(n) = &self.nkn {
            s.push_str(&format!(
                "  [Nkn]  upstream: {}, identity: {}, subclients: {}\n",
                n.address.as_deref().unwrap_or("(none)"),
                if n.seed.is_some() {
                    "seed given"
                } else {
                    "(none)"
                },
                n.subclients
            ));
            if !n.allowed_peers.is_empty() {
                s.push_str(&format!("         allowed peers: {}\n", n.allowed_peers.join(", ")));
            }
        }
        if let Some(t) = &self.tls {
            s.push_str(&tls_summary(t));
        }
        let r = &self.resi;
        s.push_str(&format!(
            "  [Resi] name: {}, mode: {}, heartbeat: {}, dead timeout: {}, redial max backoff: {}\n",
            r.name,
            mode_name(r.mode),
            fmt_duration(r.heartbeat_interval),
            fmt_duration(r.dead_timeout),
            fmt_duration(r.redial_max_backoff)
        ));
        s.push_str(&format!(
            "         resume timeout: {}, cookie ttl: {}, connect timeout: {}, shutdown grace: {}\n",
            fmt_duration(r.resume_timeout),
            fmt_duration(r.cookie_ttl),
            fmt_duration(r.connect_timeout),
            fmt_duration(r.shutdown_grace)
        ));
        s.push_str(&format!(
            "         max message size: {}, send window: {}\n",
            fmt_size(r.max_message_size),
            fmt_size(r.send_window)
        ));
        if let Some(rv) = &self.reverse {
            s.push_str(&format!("  [Reverse] listen: {}\n", list_or_none(&rv.listen)));
            s.push_str(&format!("            local server: {}\n", list_or_none(&rv.address)));
        }
        s.push_str(&format!(
            "         handshake timeout: {}, idle timeout: {}, max connections: {}\n",
            fmt_duration(r.handshake_timeout),
            fmt_duration(r.idle_timeout),
            r.max_connections
        ));
        s
    }
}

fn tls_summary(t: &TlsSettings) -> String {
    let f = &t.files;
    let name = |p: &Option<PathBuf>| p.as_ref().map_or("(none)".to_string(), |p| p.display().to_string());
    let listener = match (&t.listener, &f.client_ca) {
        (None, _) => "plain".to_string(),
        (Some(_), None) => format!("TLS 1.3 (cert {})", name(&f.cert)),
        (Some(_), Some(ca)) => format!("mutual TLS 1.3 (cert {}, client CA {})", name(&f.cert), ca.display()),
    };
    let upstream = match &t.upstream {
        None => "plain".to_string(),
        Some(_) => format!(
            "TLS 1.3 (CA {}, server name {}{})",
            name(&f.upstream_ca),
            f.server_name.as_deref().unwrap_or("= host of each address"),
            if f.cert.is_some() { ", client certificate" } else { "" }
        ),
    };
    format!("  [Tls]  listener: {listener}\n         upstream: {upstream}\n")
}

/// Whether the host of `host:port` is a loopback address (`localhost`,
/// `127.0.0.0/8`, `::1`). Names other than `localhost` are not resolved and
/// count as not loopback.
pub fn is_loopback_listen(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

/// `"strict"` or `"permissive"`.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Strict => "strict",
        Mode::Permissive => "permissive",
    }
}

/// Parses a mode name, case-insensitively.
pub fn parse_mode(s: &str) -> Option<Mode> {
    match s.trim().to_ascii_lowercase().as_str() {
        "strict" => Some(Mode::Strict),
        "permissive" => Some(Mode::Permissive),
        _ => None,
    }
}

/// Formats a duration the way the file accepts it (`"250ms"`, `"1.5s"`).
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if d.subsec_nanos() % 1_000_000 != 0 && d < Duration::from_millis(1) {
        format!("{}us", d.as_micros())
    } else if ms < 1000.0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Formats a byte size (`"16MiB"`, `"1500B"`).
pub fn fmt_size(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (u, name) in UNITS {
        if n >= u && n % u == 0 {
            return format!("{}{name}", n / u);
        }
    }
    format!("{n}B")
}

/// Parses a duration: a number with unit (`ns`, `us`, `ms`, `s`, `m`, `h`),
/// e.g. `"250ms"`, `"1.5s"`, `"2m"`. A bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!(
            "expected a duration such as \"250ms\", \"1.5s\" or \"2m\", got {s:?}"
        ));
    }
    let n: f64 = num.parse().map_err(|_| {
        format!("expected a duration such as \"250ms\", \"1.5s\" or \"2m\", got {s:?}")
    })?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "" | "s" | "sec" | "secs" => n,
        "m" | "min" | "mins" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {s:?} (use ms, s, m or h, e.g. \"250ms\", \"1.5s\", \"2m\")"
            ))
        }
    };
    secs_to_duration(secs).ok_or_else(|| format!("duration {s:?} is out of range"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 || secs > 1e9 {
        return None;
    }
    Some(Duration::from_nanos((secs * 1e9).round() as u64))
}

/// Parses a byte size: an integer, or a number with unit (`B`, `KB`, `KiB`,
/// `MB`, `MiB`, `GB`, `GiB`), e.g. `"16MiB"`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("expected a size such as 65536, \"64KiB\" or \"16MiB\", got {s:?}");
    if num.is_empty() {
        return Err(bad());
    }
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => (1u64 << 20) as f64,
        "gb" => 1e9,
        "gib" | "g" => (1u64 << 30) as f64,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {s:?} (use B, KiB, MiB or GiB, e.g. \"16MiB\")"
            ))
        }
    };
    let v = n * mult;
    if v.fract() != 0.0 {
        return Err(format!("size {s:?} is not a whole number of bytes"));
    }
    if v > (1u64 << 50) as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(v as usize)
}

/// 1-based line and column (in characters) of byte offset `pos` in `text`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..floor_char_boundary(text, pos)];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Parses TOML text; a syntax error names `origin`, line and column.
fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        ConfigError::Syntax { origin: origin.to_string(), line, column, message: e.message().trim().to_string() }
    })
}

// ---------------------------------------------------------------------------
// Validation

const SECTIONS: &[&str] = &["Tcp", "Nkn", "Resi", "Reverse", "Tls", "Metrics"];
const METRICS_KEYS: &[&str] = &["Listen"];
const TCP_KEYS: &[&str] = &["Listen", "Address"];
const REVERSE_KEYS: &[&str] = &["Listen", "Address"];
const NKN_KEYS: &[&str] = &["Address", "Seed", "Subclients", "RpcServers", "AllowedPeers"];
const TLS_KEYS: &[&str] = &["Cert", "Key", "ClientCa", "UpstreamCa", "ServerName", "PlainListen"];
const RESI_KEYS: &[&str] = &[
    "Mode",
    "Name",
    "HeartbeatInterval",
    "DeadTimeout",
    "RedialMaxBackoff",
    "ResumeTimeout",
    "CookieTtl",
    "ConnectTimeout",
    "ShutdownGrace",
    "MaxMessageSize",
    "SendWindow",
    "OpenTimeout",
    "MaxSessions",
    "MaxPendingSessions",
    "MaxPendingPerPeer",
    "OpenRatePerPeer",
    "HandshakeTimeout",
    "IdleTimeout",
    "MaxConnections",
];

fn keys_of(section: &str) -> &'static [&'static str] {
    match section {
        "Tcp" => TCP_KEYS,
        "Nkn" => NKN_KEYS,
        "Reverse" => REVERSE_KEYS,
        "Tls" => TLS_KEYS,
        "Metrics" => METRICS_KEYS,
        _ => RESI_KEYS,
    }
}

/// The form names are compared in: lower case, without `_` and `-`.
fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known name closest to `given`, if close enough to be a likely typo.
fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    let g = norm(given);
    known
        .iter()
        .map(|k| (levenshtein(&g, &norm(k)), *k))
        .filter(|(d, k)| *d <= 2.max(norm(k).len() / 4) && *d < norm(k).len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn type_name(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("a string ({s:?})"),
        toml::Value::Integer(i) => format!("an integer ({i})"),
        toml::Value::Float(f) => format!("a number ({f})"),
        toml::Value::Boolean(b) => format!("a boolean ({b})"),
        toml::Value::Datetime(d) => format!("a date/time ({d})"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

struct Parser<'a> {
    origin: &'a str,
    /// Folder `[Tls]` file names are relative to (None: the working directory).
    base: Option<&'a Path>,
    /// The configuration file's name without extension: the default
    /// `[Resi] Name` (None: not from a file).
    stem: Option<&'a str>,
}

type Res<T> = Result<T, ConfigError>;

impl Parser<'_> {
    fn err(&self, key: Option<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key,
            message: message.into(),
        }
    }

    fn key_err(&self, section: &str, key: &str, message: impl Into<String>) -> ConfigError {
        self.err(Some(format!("[{section}] {key}")), message)
    }

    fn config(&self, table: toml::Table) -> Res<Config> {
        // Sort top-level entries into the known sections.
        let mut sections: [Option<(String, toml::Table)>; 6] = Default::default();
        for (name, value) in table {
            let Some(idx) = SECTIONS.iter().position(|s| norm(s) == norm(&name)) else {
                // A key of a section written at top level?
                let owner = SECTIONS
                    .iter()
                    .find(|s| keys_of(s).iter().any(|k| norm(k) == norm(&name)));
                let msg = if !matches!(value, toml::Value::Table(_)) {
                    match owner {
                        Some(s) => format!("unknown top-level key; keys belong in a section (did you mean to put it under [{s}]?)"),
                        None => "unknown top-level key; keys belong in a section: [Tcp], [Nkn], [Resi], [Reverse], [Tls] or [Metrics]".to_string(),
                    }
                } else {
                    match closest(&name, SECTIONS) {
                        Some(s) => format!("unknown section (did you mean [{s}]?)"),
                        None => {
                            "unknown section (known sections: [Tcp], [Nkn], [Resi], [Reverse], [Tls], [Metrics])".to_string()
                        }
                    }
                };
                let key = if matches!(value, toml::Value::Table(_)) {
                    format!("[{name}]")
                } else {
                    name.clone()
                };
                return Err(self.err(Some(key), msg));
            };
            let canonical = SECTIONS[idx];
            let toml::Value::Table(t) = value else {
                return Err(self.err(
                    Some(format!("[{canonical}]")),
                    format!("expected a section (table), got {}", type_name(&value)),
                ));
            };
            if let Some((prev, _)) = &sections[idx] {
                return Err(self.err(
                    Some(format!("[{canonical}]")),
                    format!("section given twice (as [{prev}] and [{name}]; names are case-insensitive)"),
                ));
            }
            sections[idx] = Some((name, t));
        }
        let [tcp, nkn, resi, reverse, tls, metrics] = sections;
        let name_given = resi.as_ref().is_some_and(|(_, t)| t.keys().any(|k| norm(k) == "name"));
        let metrics = metrics.map(|(_, t)| self.metrics(t)).transpose()?;
        let tcp = tcp.map(|(_, t)| self.tcp(t)).transpose()?;
        let reverse = reverse.map(|(_, t)| self.reverse(t)).transpose()?;
        let nkn = nkn.map(|(_, t)| self.nkn(t)).transpose()?;
        let resi = match resi {
            Some((_, t)) => self.resi(t)?,
            None => ResiConfig::default(),
        };
        let tls = tls.map(|(_, t)| self.tls(t)).transpose()?;
        let mut cfg = Config {
            source: None,
            tcp,
            nkn,
            resi,
            reverse,
            tls,
            metrics,
        };
        self.gateway_checks(&cfg)?;
        if !name_given {
            cfg.resi.name = self.default_name(&cfg);
        }
        Ok(cfg)
    }

    /// Splits a section's table into canonical key → value, rejecting unknown
    /// and doubled keys.
    fn keys(&self, section: &str, table: toml::Table) -> Res<Vec<(&'static str, toml::Value)>> {
        let known = keys_of(section);
        let mut out: Vec<(&'static str, String, toml::Value)> = Vec::new();
        for (name, value) in table {
            let Some(k) = known.iter().find(|k| norm(k) == norm(&name)) else {
                let other = SECTIONS
                    .iter()
                    .filter(|s| **s != section)
                    .find(|s| keys_of(s).iter().any(|k| norm(k) == norm(&name)));
                let msg = match (closest(&name, known), other) {
                    (Some(k), _) => format!("unknown key (did you mean {k}?)"),
                    (None, Some(s)) => format!("unknown key in [{section}] (it is a key of [{s}])"),
                    (None, None) => format!(
                        "unknown key (known keys of [{section}]: {})",
                        known.join(", ")
                    ),
                };
                return Err(self.err(Some(format!("[{section}] {name}")), msg));
            };
            if let Some((_, prev, _)) = out.iter().find(|(c, _, _)| c == k) {
                return Err(self.key_err(
                    section,
                    k,
                    format!("given twice (as {prev} and {name}; keys are case-insensitive)"),
                ));
            }
            out.push((k, name, value));
        }
        Ok(out.into_iter().map(|(k, _, v)| (k, v)).collect())
    }

    fn string(&self, section: &str, key: &str, v: toml::Value) -> Res<String> {
        match v {
            toml::Value::String(s) => Ok(s),
            other => Err(self.key_err(
                section,
                key,
                format!("expected a string, got {}", type_name(&other)),
            )),
        }
    }

    /// A URL or a list of URLs (`http://host:port[/path]`).
    fn url_list(&self, section: &str, key: &str, v: toml::Value) -> Res<Vec<String>> {
        self.string_list(section, key, v, |url| {
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(format!("expected an http:// URL, got {url:?}"));
            }
            Ok(url)
        })
    }

    /// A string or a list of strings (`[i]` in messages), each checked and
    /// normalised by `check`.
    fn string_list(
        &self,
        section: &str,
        key: &str,
        v: toml::Value,
        check: impl Fn(String) -> Result<String, String>,
    ) -> Res<Vec<String>> {
        let values = match v {
            toml::Value::Array(a) => a,
            other => vec![other],
        };
        let entries = values.into_iter().enumerate().map(|(i, v)| {
            let name = format!("{key}[{i}]");
            let s = self.string(section, &name, v)?;
            check(s).map_err(|m| self.key_err(section, &name, m))
        });
        entries.collect()
    }

    /// A string or a list of strings; each entry is checked by `check`.
    fn addr_list(
        &self,
        section: &str,
        key: &str,
        v: toml::Value,
        listen: bool,
    ) -> Res<Vec<String>> {
        let entries: Vec<(Option<usize>, toml::Value)> = match v {
            toml::Value::String(_) => vec![(None, v)],
            toml::Value::Array(a) => {
                if a.is_empty() {
                    return Err(self.key_err(
                        section,
                        key,
                        "expected at least one \"host:port\", got an empty list",
                    ));
                }
                a.into_iter()
                    .enumerate()
                    .map(|(i, v)| (Some(i), v))
                    .collect()
            }
            other => {
                return Err(self.key_err(
                    section,
                    key,
                    format!(
                        "expected \"host:port\" or a list of them, got {}",
                        type_name(&other)
                    ),
                ))
            }
        };
        let mut out = Vec::new();
        for (idx, v) in entries {
            let name = match idx {
                Some(i) => format!("{key}[{i}]"),
                None => key.to_string(),
            };
            let s = match v {
                toml::Value::String(s) => s,
                other => {
                    return Err(self.key_err(
                        section,
                        &name,
                        format!("expected \"host:port\", got {}", type_name(&other)),
                    ))
                }
            };
            check_host_port(&s, listen).map_err(|m| self.key_err(section, &name, m))?;
            if listen && !s.ends_with(":0") && out.contains(&s) {
                return Err(self.key_err(section, &name, format!("{s:?} is listed twice")));
            }
            out.push(s);
        }
        Ok(out)
    }

    fn duration(&self, key: &str, v: toml::Value, min: Duration, max: Duration) -> Res<Duration> {
        let d = match &v {
            toml::Value::String(s) => parse_duration(s).map_err(|m| self.key_err("Resi", key, m))?,
            toml::Value::Integer(i) => {
                secs_to_duration(*i as f64).ok_or_else(|| self.key_err("Resi", key, format!("expected a duration, got {i} seconds")))?
            }
            toml::Value::Float(f) => {
                secs_to_duration(*f).ok_or_else(|| self.key_err("Resi", key, format!("expected a duration, got {f} seconds")))?
            }
            other => {
                return Err(self.key_err(
                    "Resi",
                    key,
                    format!("expected a duration such as \"250ms\", \"1.5s\" or a number of seconds, got {}", type_name(other)),
                ))
            }
        };
        if d < min || d > max {
            return Err(self.key_err(
                "Resi",
                key,
                format!(
                    "{} is out of range (allowed: {} to {})",
                    fmt_duration(d),
                    fmt_duration(min),
                    fmt_duration(max)
                ),
            ));
        }
        Ok(d)
    }

    /// A `[Resi]` integer in `min..=max`.
    fn count(&self, key: &str, v: toml::Value, min: usize, max: usize) -> Res<usize> {
        match v {
            toml::Value::Integer(i) if i >= min as i64 && i <= max as i64 => Ok(i as usize),
            toml::Value::Integer(i) => {
                Err(self.key_err("Resi", key, format!("{i} is out of range (allowed: {min} to {max})")))
            }
            other => Err(self.key_err(
                "Resi",
                key,
                format!("expected an integer ({min} to {max}), got {}", type_name(&other)),
            )),
        }
    }

    fn size(&self, key: &str, v: toml::Value, min: usize, max: usize) -> Res<usize> {
        let n = match &v {
            toml::Value::String(s) => parse_size(s).map_err(|m| self.key_err("Resi", key, m))?,
            toml::Value::Integer(i) if *i >= 0 => *i as usize,
            toml::Value::Integer(i) => {
                return Err(self.key_err("Resi", key, format!("expected a size in bytes, got {i}")))
            }
            other => {
                return Err(self.key_err(
                    "Resi",
                    key,
                    format!(
                        "expected a size such as 65536, \"64KiB\" or \"16MiB\", got {}",
                        type_name(other)
                    ),
                ))
            }
        };
        if n < min || n > max {
            return Err(self.key_err(
                "Resi",
                key,
                format!(
                    "{} is out of range (allowed: {} to {})",
                    fmt_size(n),
                    fmt_size(min),
                    fmt_size(max)
                ),
            ));
        }
        Ok(n)
    }

    fn tcp(&self, table: toml::Table) -> Res<TcpConfig> {
        let (listen, address) = self.listen_and_address("Tcp", table)?;
        Ok(TcpConfig { listen, address })
    }

    fn reverse(&self, table: toml::Table) -> Res<ReverseConfig> {
        let (listen, address) = self.listen_and_address("Reverse", table)?;
        Ok(ReverseConfig { listen, address })
    }

    /// The `Listen` and `Address` lists of a section that has just those.
    fn listen_and_address(&self, section: &str, table: toml::Table) -> Res<(Vec<String>, Vec<String>)> {
        let (mut listen, mut address) = (Vec::new(), Vec::new());
        for (k, v) in self.keys(section, table)? {
            match k {
                "Listen" => listen = self.addr_list(section, k, v, true)?,
                "Address" => address = self.addr_list(section, k, v, false)?,
                _ => unreachable!(),
            }
        }
        Ok((listen, address))
    }

    fn nkn(&self, table: toml::Table) -> Res<NknConfig> {
        let mut c = NknConfig {
            subclients: DEFAULT_NKN_SUBCLIENTS,
            ..Default::default()
        };
        for (k, v) in self.keys("Nkn", table)? {
            match k {
                "Address" => {
                    let s = self.string("Nkn", k, v)?;
                    check_nkn_address(&s).map_err(|m| self.key_err("Nkn", k, m))?;
                    c.address = Some(s);
                }
                "Seed" => {
                    let s = self.string("Nkn", k, v)?;
                    check_hex(&s, 64)
                        .map_err(|m| self.key_err("Nkn", k, format!("expected a seed of {m}")))?;
                    c.seed = Some(s.to_ascii_lowercase());
                }
                "RpcServers" => c.rpc_servers = self.url_list("Nkn", k, v)?,
                "AllowedPeers" => c.allowed_peers = self.nkn_address_list(k, v)?,
                "Subclients" => {
                    c.subclients = match v {
                        toml::Value::Integer(i) if (1..=64).contains(&i) => i as u32,
                        toml::Value::Integer(i) => {
                            return Err(self.key_err(
                                "Nkn",
                                k,
                                format!("expected 1 to 64 sub-clients, got {i}"),
                            ))
                        }
                        other => {
                            return Err(self.key_err(
                                "Nkn",
                                k,
                                format!("expected an integer (1 to 64), got {}", type_name(&other)),
                            ))
                        }
                    }
                }
                _ => unreachable!(),
            }
        }
        Ok(c)
    }

    /// An NKN address or a list of them, lower-cased.
    fn nkn_address_list(&self, key: &str, v: toml::Value) -> Res<Vec<String>> {
        self.string_list("Nkn", key, v, |s| check_nkn_address(&s).map(|()| s.to_ascii_lowercase()))
    }

    /// `[Tls]`: file names resolved against the configuration's folder,
    /// read and checked now.
    fn tls(&self, table: toml::Table) -> Res<TlsSettings> {
        let mut files = TlsFiles::default();
        for (k, v) in self.keys("Tls", table)? {
            if k == "PlainListen" {
                files.plain_listen = match v {
                    toml::Value::Boolean(b) => b,
                    other => return Err(self.key_err("Tls", k, format!("expected true or false, got {}", type_name(&other)))),
                };
                continue;
            }
            let s = self.string("Tls", k, v)?;
            if s.trim().is_empty() {
                return Err(self.key_err("Tls", k, "expected a non-empty string"));
            }
            let path = || match self.base {
                Some(base) => base.join(&s),
                None => PathBuf::from(&s),
            };
            match k {
                "Cert" => files.cert = Some(path()),
                "Key" => files.key = Some(path()),
                "ClientCa" => files.client_ca = Some(path()),
                "UpstreamCa" => files.upstream_ca = Some(path()),
                "ServerName" => files.server_name = Some(s),
                _ => unreachable!(),
            }
        }
        TlsSettings::load(files).map_err(|e| self.key_err("Tls", e.key, e.error.to_string()))
    }

    fn resi(&self, table: toml::Table) -> Res<ResiConfig> {
        let mut c = ResiConfig::default();
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let mut dead_given = false;
        for (k, v) in self.keys("Resi", table)? {
            match k {
                "Mode" => {
                    let text = match v {
                        toml::Value::String(t) => t,
                        other => {
                            return Err(self.key_err(
                                "Resi",
                                k,
                                format!(
                                    "expected \"strict\" or \"permissive\", got {}",
                                    type_name(&other)
                                ),
                            ))
                        }
                    };
                    c.mode = parse_mode(&text).ok_or_else(|| {
                        self.key_err(
                            "Resi",
                            k,
                            format!("expected \"strict\" or \"permissive\", got {text:?}"),
                        )
                    })?;
                }
                "Name" => {
                    let n = self.string("Resi", k, v)?;
                    if n.trim().is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) {
                        return Err(self.key_err(
                            "Resi",
                            k,
                            format!("expected a non-empty name of at most 64 printable characters, got {n:?}"),
                        ));
                    }
                    c.name = n;
                }
                "HeartbeatInterval" => c.heartbeat_interval = self.duration(k, v, ms(10), s(60))?,
                "DeadTimeout" => {
                    c.dead_timeout = self.duration(k, v, ms(20), s(600))?;
                    dead_given = true;
                }
                "RedialMaxBackoff" => c.redial_max_backoff = self.duration(k, v, ms(10), s(600))?,
                "ResumeTimeout" => c.resume_timeout = self.duration(k, v, ms(100), s(86400))?,
                "CookieTtl" => c.cookie_ttl = self.duration(k, v, s(1), s(86400))?,
                "ConnectTimeout" => c.connect_timeout = self.duration(k, v, ms(10), s(600))?,
                "ShutdownGrace" => {
                    c.shutdown_grace = self.duration(k, v, Duration::ZERO, s(3600))?
                }
                "MaxMessageSize" => c.max_message_size = self.size(k, v, 1 << 10, 1 << 30)?,
                "SendWindow" => c.send_window = self.size(k, v, 64 << 10, 1 << 30)?,
                "OpenTimeout" => c.open_timeout = self.duration(k, v, ms(100), s(3600))?,
                "MaxSessions" => c.max_sessions = self.count(k, v, 1, 1_000_000)?,
                "MaxPendingSessions" => c.max_pending_sessions = self.count(k, v, 1, 1_000_000)?,
                "MaxPendingPerPeer" => c.max_pending_per_peer = self.count(k, v, 1, 1_000_000)?,
                "OpenRatePerPeer" => c.open_rate_per_peer = self.count(k, v, 0, 1_000_000)? as u32,
                "HandshakeTimeout" => c.handshake_timeout = self.duration(k, v, ms(100), s(600))?,
                "IdleTimeout" => c.idle_timeout = self.duration(k, v, s(1), s(86400))?,
                "MaxConnections" => c.max_connections = self.count(k, v, 1, 1_000_000)?,
                _ => unreachable!(),
            }
        }
        if c.dead_timeout <= c.heartbeat_interval {
            let (key, msg) = if dead_given {
                (
                    "DeadTimeout",
                    format!(
                        "{} must be longer than [Resi] HeartbeatInterval ({})",
                        fmt_duration(c.dead_timeout),
                        fmt_duration(c.heartbeat_interval)
                    ),
                )
            } else {
                (
                    "HeartbeatInterval",
                    format!(
                        "{} must be shorter than [Resi] DeadTimeout ({}, the default; set DeadTimeout too)",
                        fmt_duration(c.heartbeat_interval),
                        fmt_duration(c.dead_timeout)
                    ),
                )
            };
            return Err(self.key_err("Resi", key, msg));
        }
        Ok(c)
    }

    /// `[Metrics]`: `Listen` is required (the section's only key).
    fn metrics(&self, table: toml::Table) -> Res<MetricsConfig> {
        let mut listen = None;
        for (k, v) in self.keys("Metrics", table)? {
            let s = self.string("Metrics", k, v)?;
            check_host_port(&s, true).map_err(|m| self.key_err("Metrics", k, m))?;
            listen = Some(s);
        }
        let listen = listen.ok_or_else(|| {
            self.key_err("Metrics", "Listen", "missing: [Metrics] needs the \"host:port\" to serve /metrics on")
        })?;
        Ok(MetricsConfig { listen })
    }

    /// `[Resi] Name` when not given: the file's name, else the first listen
    /// address, else "resi".
    fn default_name(&self, c: &Config) -> String {
        let name = self.stem.map(str::to_string).or_else(|| c.listen().first().cloned());
        name.filter(|n| !n.trim().is_empty() && n.len() <= 64 && !n.chars().any(char::is_control))
            .unwrap_or_else(|| "resi".into())
    }

    fn gateway_checks(&self, c: &Config) -> Res<()> {
        if c.tcp.is_none() && c.nkn.is_none() {
            return Err(self.err(None, "needs at least one of the sections [Tcp] and [Nkn]"));
        }
        let nkn_identity = c.nkn.as_ref().is_some_and(|n| n.seed.is_some());
        if c.listen().is_empty() && !nkn_identity {
            return Err(self.err(
                Some("[Tcp] Listen".into()),
                "missing: a gateway needs an address to listen on (or an NKN identity, [Nkn] Seed)",
            ));
        }
        if c.upstream_tcp().is_empty() && c.upstream_nkn().is_none() {
            let key = if c.tcp.is_some() {
                "[Tcp] Address"
            } else {
                "[Nkn] Address"
            };
            return Err(self.err(
                Some(key.into()),
                "missing: a gateway needs an upstream to forward to ([Tcp] Address or [Nkn] Address)",
            ));
        }
        Ok(())
    }
}

/// Checks `host:port` (IPv6 hosts in brackets). Port 0 is allowed only for
/// listening addresses.
pub fn check_host_port(s: &str, listen: bool) -> Result<(), String> {
    let want = "expected \"host:port\"";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{want}, got {s:?} (no port)"));
    };
    if host.is_empty() {
        return Err(format!("{want}, got {s:?} (no host)"));
    }
    if host.starts_with('[') != host.ends_with(']') {
        return Err(format!(
            "{want}, got {s:?} (unbalanced brackets around the host)"
        ));
    }
    if host.starts_with('[') {
        if host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_err()
        {
            return Err(format!("{want}, got {s:?} (bad IPv6 address)"));
        }
    } else if host.contains(':') {
        return Err(format!(
            "{want}, got {s:?} (write IPv6 hosts in brackets, e.g. \"[::1]:4001\")"
        ));
    } else if host
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))
    {
        return Err(format!("{want}, got {s:?} (bad host name)"));
    }
    let port: u32 = match port.parse() {
        Ok(p) if !port.starts_with('+') => p,
        _ => return Err(format!("{want}, got {s:?} (port {port:?} is not a number)")),
    };
    if port > 65535 {
        return Err(format!("port {port} in {s:?} is out of range (0 to 65535)"));
    }
    if port == 0 && !listen {
        return Err(format!(
            "port 0 in {s:?}: an upstream needs a real port (1 to 65535)"
        ));
    }
    Ok(())
}

fn check_hex(s: &str, len: usize) -> Result<(), String> {
    if s.len() != len || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        let hint = if !s.chars().all(|c| c.is_ascii_hexdigit()) {
            "has non-hex characters".to_string()
        } else {
            format!("has {} characters", s.len())
        };
        return Err(format!("{len} hex digits, got {s:?} ({hint})"));
    }
    Ok(())
}

/// An NKN address: an optional `identifier.` prefix and a 64-hex-digit
/// public key.
pub fn check_nkn_address(s: &str) -> Result<(), String> {
    let (ident, key) = match s.rsplit_once('.') {
        Some((i, k)) => (Some(i), k),
        None => (None, s),
    };
    if ident == Some("") {
        return Err(format!(
            "expected an NKN address ([identifier.]public key), got {s:?} (empty identifier)"
        ));
    }
    check_hex(key, 64).map_err(|m| {
        format!("expected an NKN address ([identifier.] + public key of 64 hex digits), got {s:?}: the key is {m}")
    })
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
}
