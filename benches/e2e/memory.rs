//! Gateway memory per idle session: an end gateway runs alone in a child
//! process (this executable with `--end-gateway`), so its resident set
//! counts only the gateway; this process opens idle redundant sessions to
//! it and reads the child's `VmRSS` before and after.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use resi::client::Client;
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::gateway::Gateway;
use resi::session::{Mode, SessionConfig};

/// The flag that makes this executable the child end gateway.
pub const CHILD_FLAG: &str = "--end-gateway";

/// The child: an end gateway in front of `upstream` that accepts many
/// sessions from one peer; prints its address, runs until stdin closes.
pub fn child_main(upstream: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let resi = ResiConfig {
            mode: Mode::Permissive,
            max_sessions: 100_000,
            max_pending_sessions: 100_000,
            max_pending_per_peer: 100_000,
            open_rate_per_peer: 1_000_000,
            ..ResiConfig::default()
        };
        let tcp = TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![upstream.into()] };
        let gw = Gateway::start(Config { tcp: Some(tcp), resi, ..Config::default() })
            .expect("end gateway starts");
        println!("{}", gw.local_addrs()[0]);
        tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await.ok();
        gw.shutdown().await;
    });
}

struct ChildGateway {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ChildGateway {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_child(upstream: SocketAddr) -> Result<ChildGateway, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg(CHILD_FLAG)
        .arg(upstream.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the child gateway: {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("child stdout")?;
    BufReader::new(stdout).read_line(&mut line).map_err(|e| format!("child gateway: {e}"))?;
    let addr = line.trim().parse().map_err(|_| format!("child gateway printed {line:?}, not an address"))?;
    Ok(ChildGateway { child, addr })
}

/// Resident set of process `pid`, in bytes.
fn rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmRSS in /proc/PID/status")?;
    Ok(kib * 1024)
}

async fn open_sessions(addr: SocketAddr, n: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let cfg = SessionConfig { mode: Mode::Permissive, ..SessionConfig::default() };
        let c = Client::redundant(vec![addr.to_string()], cfg, Duration::from_secs(10), None);
        tokio::time::timeout(Duration::from_secs(20), c.ready())
            .await
            .map_err(|_| "an idle session did not open within 20 s".to_string())?
            .map_err(|e| format!("an idle session failed to open: {e}"))?;
        clients.push(c);
    }
    Ok(clients)
}

/// Gateway memory per idle session, in bytes: the child's RSS growth from
/// `sessions` more idle sessions (after a few warm-up ones), divided.
pub async fn per_idle_session(upstream: SocketAddr, sessions: usize) -> Result<f64, String> {
    let child = start_child(upstream)?;
    let pid = child.child.id();
    let warm = open_sessions(child.addr, 4).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(pid)?;
    let idle = open_sessions(child.addr, sessions).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(pid)?;
    for c in idle.iter().chain(warm.iter()) {
        c.close().await;
    }
    Ok(after.saturating_sub(before) as f64 / sessions as f64)
}
