//! The setups in front of one tonic node, interleaved rounds of every
//! workload over each, and the table of medians, ranges and paired ratios.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use resi::config::{Config, NknConfig, ResiConfig, TcpConfig};
use resi::fault::FaultRelay;
use resi::gateway::Gateway;
use resi::nkn::node::{LocalNode, NodeConfig};
use resi::session::Mode;

use crate::echo::{echo_client, start_echo, TestServer};
use crate::hops::{self, Hops, Layer};
use crate::memory;
use crate::processes::{self, ProcessPair};
use crate::workload::{self, Client, Cut, LARGE, SMALL};

/// The name of the setup of two `resi gateway` processes.
const PROCESSES: &str = "resi pair, two processes";

/// What to run.
pub struct Opts {
    pub rounds: usize,
    /// Seconds per figure.
    pub secs: f64,
    /// HAProxy for the two L4 hops (a tokio relay without).
    pub haproxy: Option<PathBuf>,
    /// The `resi` command, for the pair as two processes.
    pub resi: Option<PathBuf>,
    /// Also the pair joined by one TCP path and NKN through a local node.
    pub nkn: bool,
    /// Idle sessions opened for the memory figure.
    pub sessions: usize,
}

/// One round's figures over one setup.
#[derive(Clone, Copy)]
pub struct Figures {
    pub p50_us: f64,
    pub p99_us: f64,
    pub c64_per_s: f64,
    pub c16_large_per_s: f64,
    pub stream_mb_s: f64,
}

pub struct Report {
    pub names: Vec<String>,
    /// `rounds[setup][round]`.
    pub rounds: Vec<Vec<Figures>>,
    pub cuts: Vec<Cut>,
    pub idle_session_bytes: f64,
}

/// A setup: its client, and what it keeps running (hops, gateways, node).
struct Setup {
    name: String,
    client: Client,
    _hops: Option<Hops>,
    _processes: Option<ProcessPair>,
    _gateways: Vec<Gateway>,
    _node: Option<LocalNode>,
}

impl Setup {
    async fn new(name: &str, addr: SocketAddr) -> Setup {
        Setup { name: name.into(), client: echo_client(addr).await, _hops: None, _processes: None, _gateways: vec![], _node: None }
    }
}

fn resi(mode: Mode) -> ResiConfig {
    ResiConfig { mode, connect_timeout: Duration::from_secs(5), ..ResiConfig::default() }
}

fn gateway(tcp: TcpConfig, nkn: Option<NknConfig>, mode: Mode) -> Result<Gateway, String> {
    Gateway::start(Config { tcp: Some(tcp), nkn, resi: resi(mode), ..Config::default() })
        .map_err(|e| format!("gateway: {e}"))
}

fn tcp(listen: usize, address: Vec<String>) -> TcpConfig {
    TcpConfig { listen: vec!["127.0.0.1:0".into(); listen], address }
}

/// Waits (20 s at most) until `gw`'s upstream session has `n` live paths.
async fn wait_live(gw: &Gateway, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(s) = gw.upstream_session() {
            if s.stats().await.is_some_and(|st| st.paths.iter().filter(|p| p.live).count() >= n) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the session did not get {n} live paths within 20 s"))
}

/// A client gateway ⇒ two TCP paths ⇒ end gateway → `server`; `relay`
/// puts a fault relay on the first path.
async fn tcp_pair(server: SocketAddr, mode: Mode, relay: Option<&mut Option<FaultRelay>>) -> Result<(Gateway, Gateway), String> {
    let end = gateway(tcp(2, vec![server.to_string()]), None, mode)?;
    let mut paths: Vec<String> = end.local_addrs().iter().map(|a| a.to_string()).collect();
    if let Some(slot) = relay {
        let r = FaultRelay::start(end.local_addrs()[0]).await;
        paths[0] = r.addr().to_string();
        *slot = Some(r);
    }
    let client = gateway(tcp(1, paths), None, mode)?;
    wait_live(&client, 2).await?;
    Ok((end, client))
}

fn nkn(address: Option<String>, seed: u8, rpc: &str) -> NknConfig {
    let seed = Some(hex::encode([seed; 32]));
    NknConfig { address, seed, subclients: 2, rpc_servers: vec![rpc.into()], allowed_peers: vec![] }
}

/// A pair joined by one TCP path and NKN through a local node (permissive).
async fn nkn_pair(server: SocketAddr) -> Result<(Vec<Gateway>, LocalNode), String> {
    let node = LocalNode::start(NodeConfig::default()).await.map_err(|e| format!("local NKN node: {e}"))?;
    let rpc = node.rpc_url();
    let end = gateway(tcp(1, vec![server.to_string()]), Some(nkn(None, 1, &rpc)), Mode::Permissive)?;
    let up = vec![end.local_addrs()[0].to_string()];
    let client = gateway(tcp(1, up), Some(nkn(end.nkn_address(), 2, &rpc)), Mode::Permissive)?;
    wait_live(&client, 2).await?;
    Ok((vec![end, client], node))
}

async fn setups(server: &TestServer, opts: &Opts) -> Result<Vec<Setup>, String> {
    let hops = match &opts.haproxy {
        Some(path) => hops::haproxy(path, server.addr, Layer::Four).await?,
        None => hops::tokio_relays(server.addr).await,
    };
    let mut out = vec![Setup::new("direct", server.addr).await, Setup::new(hops.name, hops.addr).await];
    out[1]._hops = Some(hops);
    for (name, mode) in [("resi pair, permissive", Mode::Permissive), ("resi pair, strict", Mode::Strict)] {
        let (end, client) = tcp_pair(server.addr, mode, None).await?;
        let setup = Setup::new(name, client.local_addrs()[0]).await;
        out.push(Setup { _gateways: vec![end, client], ..setup });
    }
    if let Some(resi) = &opts.resi {
        let pair = processes::start(resi, server.addr).await?;
        let setup = Setup::new(PROCESSES, pair.addr).await;
        out.push(Setup { _processes: Some(pair), ..setup });
    }
    if opts.nkn {
        let (gateways, node) = nkn_pair(server.addr).await?;
        let setup = Setup::new("resi pair, TCP + NKN", gateways[1].local_addrs()[0]).await;
        out.push(Setup { _gateways: gateways, _node: Some(node), ..setup });
    }
    if let Some(path) = &opts.haproxy {
        let hops = hops::haproxy(path, server.addr, Layer::Seven).await?;
        let setup = Setup::new(hops.name, hops.addr).await;
        out.push(Setup { _hops: Some(hops), ..setup });
    }
    Ok(out)
}

async fn figures(c: &Client, secs: f64) -> Result<Figures, String> {
    let lat = workload::latency(c, secs).await?;
    Ok(Figures {
        p50_us: lat.p50_us,
        p99_us: lat.p99_us,
        c64_per_s: workload::calls_per_s(c, secs, 64, SMALL).await?,
        c16_large_per_s: workload::calls_per_s(c, secs, 16, LARGE).await?,
        stream_mb_s: workload::stream_mb_s(c, secs).await?,
    })
}

/// One workload over one setup for `opts.secs`: what a profiler watches.
pub async fn profile(opts: &Opts, setup: &str, workload: &str) -> Result<String, String> {
    let server = start_echo().await;
    let mut keep = None;
    let addr = match setup {
        "direct" => server.addr,
        "hops" => {
            let hops = match &opts.haproxy {
                Some(path) => hops::haproxy(path, server.addr, Layer::Four).await?,
                None => hops::tokio_relays(server.addr).await,
            };
            let addr = hops.addr;
            keep = Some((Some(hops), vec![]));
            addr
        }
        "pair" => {
            let (end, client) = tcp_pair(server.addr, Mode::Permissive, None).await?;
            let addr = client.local_addrs()[0];
            keep = Some((None, vec![end, client]));
            addr
        }
        other => match other.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => return Err(format!("unknown setup {other:?} (direct, hops, pair or an address)")),
        },
    };
    let c = echo_client(addr).await;
    let mut lines = Vec::new();
    for w in workload.split(',') {
        lines.push(one_workload(&c, setup, w, opts.secs).await?);
    }
    drop(keep);
    server.stop().await;
    Ok(lines.join("\n"))
}

async fn one_workload(c: &Client, setup: &str, workload: &str, secs: f64) -> Result<String, String> {
    let line = match workload {
        "c1" => {
            let l = workload::latency(c, secs).await?;
            format!("{setup} c1: p50 {:.0} µs, p99 {:.0} µs", l.p50_us, l.p99_us)
        }
        "c64" => format!("{setup} c64: {:.0} calls/s", workload::calls_per_s(c, secs, 64, SMALL).await?),
        "large" => format!("{setup} 16 KiB c16: {:.0} calls/s", workload::calls_per_s(c, secs, 16, LARGE).await?),
        "stream" => format!("{setup} stream: {:.0} MB/s", workload::stream_mb_s(c, secs).await?),
        other => return Err(format!("unknown workload {other:?} (c1, c64, large or stream)")),
    };
    Ok(line)
}

/// One killed path: a fresh permissive pair, its first path through a
/// relay that is killed halfway (8 callers).
async fn killed_path(server: SocketAddr, secs: f64) -> Result<Cut, String> {
    let mut relay = None;
    let (end, client) = tcp_pair(server, Mode::Permissive, Some(&mut relay)).await?;
    let c = echo_client(client.local_addrs()[0]).await;
    let relay = relay.expect("the pair has a relay");
    let cut = workload::cut(&c, secs, 8, || relay.kill()).await;
    client.shutdown().await;
    end.shutdown().await;
    cut
}

/// Every round runs every setup once (in a rotated order), then the
/// killed-path run; the memory figure comes last.
pub async fn run(opts: &Opts, progress: impl Fn(&str)) -> Result<Report, String> {
    let server = start_echo().await;
    let setups = setups(&server, opts).await?;
    let mut rounds = vec![Vec::new(); setups.len()];
    let mut cuts = Vec::new();
    for r in 0..opts.rounds {
        for k in 0..setups.len() {
            let i = (k + r) % setups.len();
            let f = figures(&setups[i].client, opts.secs).await.map_err(|e| format!("{}: {e}", setups[i].name))?;
            progress(&format!(
                "round {}/{} {:<28} p50 {:6.0} µs p99 {:6.0} µs | c64 {:7.0}/s | 16KiB c16 {:6.0}/s | stream {:6.0} MB/s",
                r + 1, opts.rounds, setups[i].name, f.p50_us, f.p99_us, f.c64_per_s, f.c16_large_per_s, f.stream_mb_s
            ));
            rounds[i].push(f);
        }
        let cut = killed_path(server.addr, opts.secs).await.map_err(|e| format!("killed path: {e}"))?;
        progress(&format!(
            "round {}/{} killed path: {} of {} calls failed, p99 {:.0} µs over the cut, {:.0} µs steady",
            r + 1, opts.rounds, cut.failed, cut.calls, cut.cut_p99_us, cut.steady_p99_us
        ));
        cuts.push(cut);
    }
    let idle_session_bytes = memory::per_idle_session(server.addr, opts.sessions).await?;
    progress(&format!("idle sessions: {:.1} KiB of end-gateway RSS each", idle_session_bytes / 1024.0));
    let names = setups.iter().map(|s| s.name.clone()).collect();
    drop(setups);
    server.stop().await;
    Ok(Report { names, rounds, cuts, idle_session_bytes })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `v`'s median and range, with `unit` after the median.
fn spread(v: &[f64], digits: usize, unit: &str) -> String {
    let (lo, hi) = (v.iter().cloned().fold(f64::MAX, f64::min), v.iter().cloned().fold(f64::MIN, f64::max));
    format!("{:.*}{unit} ({:.*}–{:.*})", digits, median(v), digits, lo, digits, hi)
}

/// Median (min–max) of the per-round ratios `a[r] / b[r]`.
fn paired(a: &[f64], b: &[f64]) -> String {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    spread(&r, 2, "×")
}

/// Row label, the figure, its decimals, the goal, a short label for the
/// ratio lines under the table.
type Metric = (&'static str, fn(&Figures) -> f64, usize, &'static str, &'static str);

fn metrics() -> [Metric; 5] {
    [
    ("unary 64 B, c1, p50 µs", |f| f.p50_us, 0, "≤ 1.25×", "c1 p50"),
    ("unary 64 B, c1, p99 µs", |f| f.p99_us, 0, "", "c1 p99"),
    ("unary 64 B, c64, calls/s", |f| f.c64_per_s, 0, "≥ 0.75×", "c64"),
    ("unary 16 KiB, c16, calls/s", |f| f.c16_large_per_s, 0, "≥ 0.75×", "16 KiB c16"),
    ("server stream 64 KiB chunks, MB/s", |f| f.stream_mb_s, 0, "≥ 0.75×", "stream"),
    ]
}

/// The markdown table of `report` (pasted into docs/performance.md).
pub fn table(report: &Report) -> String {
    let rounds = report.rounds[0].len();
    let mut out = format!("Medians of {rounds} interleaved rounds (min–max); ratios are paired per round.\n\n");
    let processes = report.names.iter().position(|n| n == PROCESSES);
    let extra = if processes.is_some() { " two processes / L4 hops |" } else { "" };
    out += &format!("| workload | {} | permissive / L4 hops |{extra} goal |\n", report.names.join(" | "));
    out += &format!("|---|{}---|{}---|\n", "---|".repeat(report.names.len()), if processes.is_some() { "---|" } else { "" });
    let col = |i: usize, m: &Metric| report.rounds[i].iter().map(m.1).collect::<Vec<_>>();
    let metrics = metrics();
    for m in &metrics {
        let cells: Vec<String> = (0..report.names.len()).map(|i| spread(&col(i, m), m.2, "")).collect();
        let extra = processes.map(|p| format!(" {} |", paired(&col(p, m), &col(1, m)))).unwrap_or_default();
        out += &format!("| {} | {} | {} |{extra} {} |\n", m.0, cells.join(" | "), paired(&col(2, m), &col(1, m)), m.3);
    }
    let p50 = &metrics[0];
    // Every figure's paired ratio of setup `a` to setup `b`, on one line.
    let ratios = |a: usize, b: usize| {
        metrics.iter().map(|m| format!("{} {}", m.4, paired(&col(a, m), &col(b, m)))).collect::<Vec<_>>().join(", ")
    };
    if let Some(l7) = report.names.iter().position(|n| n == Layer::Seven.name()) {
        out += &format!("\n- for reference, two HTTP/2 hops (HAProxy) / L4 hops: {}", ratios(l7, 1));
        if let Some(p) = processes {
            out += &format!("\n- two processes / two HTTP/2 hops (HAProxy): {}", ratios(p, l7));
        }
    }
    out += &format!("\n- strict / permissive, c1 p50: {} (goal ≤ 1.2×)\n", paired(&col(3, p50), &col(2, p50)));
    let failed: usize = report.cuts.iter().map(|c| c.failed).sum();
    let calls: usize = report.cuts.iter().map(|c| c.calls).sum();
    let over: Vec<f64> = report.cuts.iter().map(|c| c.cut_p99_us).collect();
    let steady: Vec<f64> = report.cuts.iter().map(|c| c.steady_p99_us).collect();
    out += &format!(
        "- killed path (permissive pair, 8 callers, one of two TCP paths reset halfway): {failed} of {calls} calls failed \
         (goal 0); p99 over the cut {} µs, steady {} µs, ratio {} (goal ≤ 2×)\n",
        spread(&over, 0, ""), spread(&steady, 0, ""), paired(&over, &steady)
    );
    out += &format!(
        "- idle session: {:.1} KiB of end-gateway resident memory each (goal ≤ 64 KiB)\n",
        report.idle_session_bytes / 1024.0
    );
    out
}
