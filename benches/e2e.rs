//! End-to-end benchmark: one tonic node behind each of
//!
//! - `direct`: client → node;
//! - two plain L4 hops: client → HAProxy → HAProxy → node (TCP mode; the
//!   floor a gateway pair is held to);
//! - a resi pair, permissive and strict: client → client gateway ⇒ two TCP
//!   paths ⇒ end gateway → node;
//! - a resi pair joined by one TCP path and NKN through a local node;
//! - with `--resi PATH`, the permissive pair as two `resi gateway`
//!   processes (what a check from outside measures);
//! - with `--haproxy PATH`, for reference, the same HAProxy as two HTTP/2
//!   hops (each terminating HTTP/2 on both sides, as a gateway does);
//!
//! in interleaved rounds: unary 64 B at concurrency 1 (p50, p99) and 64
//! (calls/s), unary 16 KiB at concurrency 16, server-streamed 64 KiB
//! chunks (MB/s); then a path killed mid-run, and the end gateway's memory
//! per idle session. Prints a markdown table (medians, min–max, paired
//! ratios) for docs/performance.md. Usually run by `tools/bench.py`,
//! which also compares resi's Python client with grpc.aio:
//! `cargo bench --bench e2e -- --help`.

#[path = "../tests/common/echo.rs"]
#[allow(dead_code)]
mod echo;
#[path = "e2e/bench.rs"]
mod bench;
#[path = "e2e/hops.rs"]
mod hops;
#[path = "e2e/memory.rs"]
mod memory;
#[path = "e2e/processes.rs"]
mod processes;
#[path = "e2e/workload.rs"]
mod workload;

use std::io::Read;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "resi end-to-end benchmark (see docs/performance.md)")]
struct Args {
    /// Interleaved rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per figure.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// HAProxy executable for the two L4 hops and the two HTTP/2 hops
    /// (without: two tokio relays, and no HTTP/2 hops).
    #[arg(long)]
    haproxy: Option<PathBuf>,
    /// The `resi` command: adds the pair as two `resi gateway` processes
    /// (permissive, two TCP paths), as operators run it.
    #[arg(long)]
    resi: Option<PathBuf>,
    /// Leave out the TCP + NKN pair.
    #[arg(long)]
    no_nkn: bool,
    /// Idle sessions opened for the memory figure.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Run one workload over one setup only, for `--secs` seconds, and print
    /// its figure: for a profiler (docs/performance.md, "Profiling").
    /// SETUP is direct, hops, pair or HOST:PORT (anything in front of an
    /// echo node, e.g. one from --serve); WORKLOAD is c1, c64, large or
    /// stream, or several of them comma-separated, run in that order.
    #[arg(long, num_args = 2, value_names = ["SETUP", "WORKLOAD"])]
    profile: Option<Vec<String>>,
    /// Only start the tonic node, print its address, run until stdin closes.
    #[arg(long)]
    serve: bool,
    /// Internal: run as the child end gateway of the memory figure.
    #[arg(long = "end-gateway", value_name = "UPSTREAM", hide = true)]
    end_gateway: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the figures depend on: CPUs, processor (family and model, since
/// two machines both named "AMD EPYC" measured very differently), the
/// kernel's return-stack mitigation (it taxes every system call) and load.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".into());
    let family = match (field("cpu family"), field("model")) {
        (Some(f), Some(m)) => format!(", family {f} model {m}"),
        _ => String::new(),
    };
    let srso = std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/spec_rstack_overflow")
        .map(|s| format!(", spec_rstack_overflow: {}", s.trim()))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    format!("{cpus} CPUs ({model}{family}){srso}, load average {load}")
}

fn serve() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let server = echo::start_echo().await;
        println!("{}", server.addr);
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await.ok();
        server.stop().await;
    });
}

fn main() {
    let args = Args::parse();
    if let Some(upstream) = &args.end_gateway {
        return memory::child_main(upstream);
    }
    if args.serve {
        return serve();
    }
    let opts = bench::Opts {
        rounds: args.rounds.max(1),
        secs: args.secs,
        haproxy: args.haproxy,
        resi: args.resi,
        nkn: !args.no_nkn,
        sessions: args.sessions.max(1),
    };
    eprintln!("machine: {}", machine());
    if let Some(p) = &args.profile {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
        match rt.block_on(bench::profile(&opts, &p[0], &p[1])) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("profile run failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(bench::run(&opts, |line| eprintln!("{line}"))) {
        Ok(report) => println!("{}", bench::table(&report)),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
