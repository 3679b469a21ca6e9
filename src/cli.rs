//! The `resi` command.
//!
//! ```text
//! resi gateway --config FILE [--log-level LEVEL] [--log-format text|json]
//!                                                  run a gateway until SIGINT/SIGTERM
//! resi -config FILE                                the original gateway's form
//! resi check-config FILE                           validate a file and print a summary
//! resi demo [OPTIONS]                              the one-command demo (run by the Python package)
//! resi version                                     print the version
//! resi sim ROLE... [--listen ADDR]                 simulated ESI roles (run by the Python package)
//! resi conformance --target ADDR --role ROLE        the RESI conformance suite (run by the Python package)
//! ```
//!
//! Exit codes: 0 success, 1 the gateway failed at run time (e.g. an address
//! in use), 2 bad usage or a bad configuration file.
//!
//! `resi gateway` and `resi check-config` print `resi: WARNING: ...` on
//! stderr for every listen address beyond loopback when the listener has no
//! TLS. `resi gateway` prints one line per bound address to stderr,
//! `resi: listening on 127.0.0.1:40123`, once the gateway accepts
//! connections (so a caller that configured port 0 can find the port),
//! one `resi: reverse listening on ADDR` line per `[Reverse] Listen`
//! address, and `resi: metrics on http://ADDR/metrics` with `[Metrics]`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: the gateway failed.
pub const EXIT_FAILURE: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "resi",
    version,
    about = "Redundant Energy Services Interface: ESI gateways over redundant transports",
    after_help = "The original form `resi -config FILE` is accepted and runs a gateway."
)]
struct Cli {
    /// Log level or filter (error, warn, info, debug, trace, or e.g.
    /// "resi=debug,hyper=warn"); overrides the RESI_LOG environment variable.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,

    /// Log records as text lines or as JSON objects, one per line (each
    /// with the gateway's name, `[Resi] Name`).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway from a configuration file until SIGINT or SIGTERM.
    Gateway {
        /// The TOML configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration file: print a summary and warnings (exit 0),
    /// or every error found (exit 2).
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Make an NKN identity for a configuration file (a new random one, or
    /// the one of a given seed): prints the seed, public key and address.
    NknIdentity {
        /// An existing seed (64 hex digits) to show the address of.
        #[arg(long, value_name = "HEX")]
        seed: Option<String>,
    },
    /// Run resi's embedded local NKN node (seed RPC + WebSocket relay) on
    /// loopback until SIGINT or SIGTERM, so NKN paths work offline.
    NknNode {
        /// Where the seed JSON-RPC listens (point `[Nkn] RpcServers` at
        /// `http://` this address).
        #[arg(long, default_value = "127.0.0.1:30003", value_name = "ADDR")]
        rpc_listen: std::net::SocketAddr,
        /// Where the WebSocket relay listens (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        ws_listen: std::net::SocketAddr,
        /// Test knob: the share of relayed messages to drop (0.0 to 1.0).
        #[arg(long, default_value_t = 0.0, value_name = "P")]
        loss: f64,
    },
    /// Run simulated ESI roles (facility, exchange, registry) until SIGINT
    /// or SIGTERM; `resi sim --help` for options. Provided by the Python
    /// package's `resi` command.
    Sim {
        /// The roles and options, read by the Python side.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Check a RESI gateway against docs/protocol.md by playing the other
    /// side on the wire (`resi conformance --help` for options; see
    /// docs/conformance.md). Provided by the Python package's `resi` command.
    Conformance {
        /// Options of the suite (handled by the Python package).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Run the whole mission on this machine in one command: simulated
    /// facility and exchange behind a gateway pair joined by two TCP paths
    /// and an NKN path (embedded local node), ESI calls both ways while paths
    /// are cut and restored, then a summary (`resi demo --help` for options).
    Demo {
        /// Options of the demo (handled by the Python package).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            hide = true
        )]
        args: Vec<String>,
    },
    /// Print the version.
    Version,
}

/// Answer to a subcommand the Python `resi` command handles before the
/// Rust CLI sees it, when the Rust CLI is reached another way.
fn python_only(name: &str) -> i32 {
    eprintln!("resi: error: `resi {name}` is provided by the Python package; run the `resi` command that `pip install resi` installs");
    EXIT_USAGE
}

/// Rewrites the original gateway's single-dash options (`-config FILE`,
/// `-config=FILE`) into `--config`, and inserts the `gateway` subcommand when
/// the command line starts with an option that only it takes.
fn normalize(args: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = args
        .into_iter()
        .map(|a| {
            for legacy in ["-config", "-log-level"] {
                if a == legacy {
                    return format!("-{a}");
                }
                if let Some(rest) = a.strip_prefix(legacy).and_then(|r| r.strip_prefix('=')) {
                    return format!("-{legacy}={rest}");
                }
            }
            a
        })
        .collect();
    // `resi --config FILE ...` (no subcommand) means `resi gateway --config FILE ...`.
    let insert_gateway_at = {
        let mut i = 0;
        let mut found = None;
        while i < out.len() {
            let a = &out[i];
            if a == "--log-level" || a == "--log-format" {
                i += 2;
                continue;
            }
            if a.starts_with('-') {
                if a == "--config" || a.starts_with("--config=") || a == "-c" {
                    found = Some(i);
                }
                break;
            }
            break;
        }
        found
    };
    if let Some(i) = insert_gateway_at {
        out.insert(i, "gateway".into());
    }
    out
}

/// Runs the `resi` command with `args` (without the program name) and
/// returns the process exit code.
pub fn run(args: Vec<String>) -> i32 {
    let mut argv = vec!["resi".to_string()];
    argv.extend(normalize(args));
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    match cli.command {
        Command::Version => {
            println!("resi {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Gateway { config } => gateway(config, logging(cli.log_level, &cli.log_format)),
        Command::NknIdentity { seed } => nkn_identity(seed),
        Command::NknNode { rpc_listen, ws_listen, loss } => nkn_node(rpc_listen, ws_listen, loss, logging(cli.log_level, &cli.log_format)),
        Command::Sim { .. } => python_only("sim"),
        Command::Demo { .. } => python_only("demo"),
        Command::Conformance { .. } => python_only("conformance"),
    }
}

fn nkn_identity(seed: Option<String>) -> i32 {
    let identity = match seed {
        None => crate::nkn::Identity::generate(),
        Some(hex_seed) => {
            let mut bytes = [0u8; 32];
            if hex::decode_to_slice(hex_seed.trim(), &mut bytes).is_err() {
                eprintln!("resi: error: --seed: expected 64 hex digits");
                return EXIT_USAGE;
            }
            crate::nkn::Identity::from_seed(bytes)
        }
    };
    println!("# this gateway's NKN identity: keep the seed secret");
    println!("[Nkn]");
    println!("Seed = \"{}\"", hex::encode(identity.seed()));
    println!("# the previous gateway puts this in its [Nkn] Address:");
    println!("# Address = \"{}\"", identity.public_key_hex());
    0
}

fn nkn_node(rpc_listen: std::net::SocketAddr, ws_listen: std::net::SocketAddr, loss: f64, log: Logging) -> i32 {
    if let Err(e) = init_logging(log, None) {
        eprintln!("resi: error: {e}");
        return EXIT_USAGE;
    }
    if !(0.0..=1.0).contains(&loss) {
        eprintln!("resi: error: --loss: expected a share from 0.0 to 1.0, got {loss}");
        return EXIT_USAGE;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("resi").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("resi: error: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    rt.block_on(async move {
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("resi: error: cannot install signal handlers: {e}");
                return EXIT_FAILURE;
            }
        };
        let cfg = crate::nkn::node::NodeConfig { rpc_listen, ws_listen, loss, ..Default::default() };
        let node = match crate::nkn::node::LocalNode::start(cfg).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("resi: error: cannot start the NKN node on {rpc_listen}: {e}");
                return EXIT_FAILURE;
            }
        };
        {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "resi: NKN seed RPC on {}", node.rpc_url());
            let _ = writeln!(err, "resi: NKN relay on ws://{}", node.ws_addr());
            let _ = err.flush();
        }
        let sig = signals.recv().await;
        tracing::info!("{sig} received, stopping the NKN node");
        node.shutdown().await;
        0
    })
}

/// The configuration's warnings on stderr, `resi: WARNING: ...`, whatever
/// the log level (a gateway also logs them).
/// `resi check-config FILE`: the summary and any warnings (exit 0), or
/// every error found (exit 2).
fn check_config(file: &std::path::Path) -> i32 {
    match Config::check_file(file) {
        Ok(cfg) => {
            print!("{}", cfg.summary());
            let _ = std::io::stdout().flush();
            print_warnings(&cfg);
            0
        }
        Err(errors) => {
            print_errors(&errors);
            EXIT_USAGE
        }
    }
}

/// One `resi: error:` line per error, and how many there are.
fn print_errors(errors: &[crate::config::ConfigError]) {
    let mut err = std::io::stderr().lock();
    for e in errors {
        let _ = writeln!(err, "resi: error: {e}");
    }
    if errors.len() > 1 {
        let _ = writeln!(err, "resi: {} errors", errors.len());
    }
    let _ = err.flush();
}

fn print_warnings(cfg: &Config) {
    let mut err = std::io::stderr().lock();
    for w in cfg.warnings() {
        let _ = writeln!(err, "resi: WARNING: {w}");
    }
    let _ = err.flush();
}

/// `--log-level` and `--log-format` as given.
struct Logging {
    level: Option<String>,
    format: crate::logs::LogFormat,
}

fn logging(level: Option<String>, format: &str) -> Logging {
    Logging { level, format: format.parse().unwrap_or_default() }
}

/// Installs the log subscriber; `name` goes on every record.
fn init_logging(log: Logging, name: Option<String>) -> Result<(), String> {
    let spec = log
        .level
        .or_else(|| {
            std::env::var("RESI_LOG")
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .map_err(|e| format!("bad log level {spec:?}: {e}"))?;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let options = crate::logs::LogOptions { format: log.format, name, ansi, ..Default::default() };
    crate::logs::init(options, filter);
    Ok(())
}

fn gateway(path: PathBuf, log: Logging) -> i32 {
    let cfg = match Config::check_file(&path) {
        Ok(c) => c,
        Err(errors) => {
            print_errors(&errors);
            return EXIT_USAGE;
        }
    };
    if let Err(e) = init_logging(log, Some(cfg.resi.name.clone())) {
        eprintln!("resi: error: {e}");
        return EXIT_USAGE;
    }
    print_warnings(&cfg);
    let rt = match runtime_builder(cfg.resi.threads).enable_all().thread_name("resi").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("resi: error: cannot start the runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let code = rt.block_on(serve(cfg));
    // Tasks still running after shutdown (e.g. a stuck connection) must not
    // keep the process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// The gateway's runtime. One thread (`[Resi] Threads = 1`, the default on
/// two CPUs) is the main thread itself: a current-thread scheduler, with no
/// hand-over between a worker and the thread that waits for I/O, carried
/// about an eighth more calls per second at concurrency 64 than one worker
/// of the multi-thread scheduler (docs/performance.md).
fn runtime_builder(threads: usize) -> tokio::runtime::Builder {
    if threads == 1 {
        return tokio::runtime::Builder::new_current_thread();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads);
    builder
}

/// Waits for the next SIGINT or SIGTERM.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

async fn serve(cfg: Config) -> i32 {
    // Signal handlers first: a signal that arrives once we said we are
    // listening must reach us, not kill the process.
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("resi: error: cannot install signal handlers: {e}");
            return EXIT_FAILURE;
        }
    };
    let origin = cfg
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    tracing::info!(name = %cfg.resi.name, mode = crate::config::mode_name(cfg.resi.mode), config = %origin, "configuration loaded");
    let listen = cfg.listen().join(", ");
    // Takes effect on the one-thread runtime only (`Threads = 1`).
    if !cfg.resi.busy_poll.is_zero() {
        crate::busy_poll::install(cfg.resi.busy_poll);
    }
    let gw = match crate::gateway::Gateway::start(cfg) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("gateway failed to start: {e}");
            eprintln!("resi: error: {origin}: cannot start the gateway (listen: {listen}): {e}");
            return EXIT_FAILURE;
        }
    };
    {
        let mut err = std::io::stderr().lock();
        for a in gw.local_addrs() {
            let _ = writeln!(err, "resi: listening on {a}");
        }
        for a in gw.reverse_addrs() {
            let _ = writeln!(err, "resi: reverse listening on {a}");
        }
        if let Some(a) = gw.metrics_addr() {
            let _ = writeln!(err, "resi: metrics on http://{a}/metrics");
        }
        let _ = err.flush();
    }
    let sig = signals.recv().await;
    tracing::info!("{sig} received, shutting down (send it again to stop at once)");
    tokio::select! {
        _ = gw.shutdown() => 0,
        again = signals.recv() => {
            tracing::warn!("{again} received again, stopping at once");
            130
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(a: &[&str]) -> Vec<String> {
        normalize(a.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn legacy_forms() {
        assert_eq!(n(&["-config", "g.toml"]), ["gateway", "--config", "g.toml"]);
        assert_eq!(n(&["-config=g.toml"]), ["gateway", "--config=g.toml"]);
        assert_eq!(
            n(&["--config", "g.toml"]),
            ["gateway", "--config", "g.toml"]
        );
        assert_eq!(
            n(&["gateway", "-config", "g.toml"]),
            ["gateway", "--config", "g.toml"]
        );
        assert_eq!(
            n(&["--log-level", "debug", "-config", "g.toml"]),
            ["--log-level", "debug", "gateway", "--config", "g.toml"]
        );
        assert_eq!(n(&["check-config", "g.toml"]), ["check-config", "g.toml"]);
        assert_eq!(n(&["version"]), ["version"]);
    }

    #[test]
    fn parses() {
        let p = |a: &[&str]| {
            let mut argv = vec!["resi".to_string()];
            argv.extend(n(a));
            Cli::try_parse_from(argv)
        };
        assert!(matches!(
            p(&["-config", "g.toml"]).unwrap().command,
            Command::Gateway { .. }
        ));
        assert!(matches!(
            p(&["gateway", "--config", "g.toml", "--log-level", "debug"])
                .unwrap()
                .command,
            Command::Gateway { .. }
        ));
        assert!(matches!(
            p(&["check-config", "g.toml"]).unwrap().command,
            Command::CheckConfig { .. }
        ));
        assert!(p(&["gateway"]).is_err());
        assert!(p(&[]).is_err());
    }

    #[test]
    fn exit_codes() {
        let r = |a: &[&str]| run(a.iter().map(|s| s.to_string()).collect());
        assert_eq!(r(&["version"]), 0);
        assert_eq!(r(&["--help"]), 0);
        assert_eq!(r(&["no-such-command"]), EXIT_USAGE);
        assert_eq!(r(&["sim", "facility", "--listen", "127.0.0.1:0"]), EXIT_USAGE);
        assert_eq!(r(&["demo", "--duration", "5"]), EXIT_USAGE);
        assert_eq!(r(&["conformance", "--target", "127.0.0.1:1"]), EXIT_USAGE);
        assert_eq!(
            r(&["check-config", "/nonexistent/gateway.toml"]),
            EXIT_USAGE
        );
        assert_eq!(
            r(&["gateway", "--config", "/nonexistent/gateway.toml"]),
            EXIT_USAGE
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gateway.toml");
        std::fs::write(&f, crate::config::EXAMPLE).unwrap();
        assert_eq!(r(&["check-config", f.to_str().unwrap()]), 0);
        std::fs::write(&f, "[Resi]\nMode = \"fast\"\n").unwrap();
        assert_eq!(r(&["check-config", f.to_str().unwrap()]), EXIT_USAGE);
    }
}
