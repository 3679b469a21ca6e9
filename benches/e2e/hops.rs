//! Two plain L4 hops in front of the server: the floor a gateway pair is
//! held to. HAProxy in TCP mode when its path is given (one process, two
//! chained frontends, on loopback); otherwise a tokio relay (only for the
//! smoke test: it is named so in the table).
//!
//! Beside them, for reference only, the same HAProxy as two HTTP/2 hops
//! (`mode http`, `proto h2` on each side): what a mature proxy that
//! terminates HTTP/2 twice per hop costs, as each resi gateway does.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// The running hops; dropping it stops them.
pub struct Hops {
    pub addr: SocketAddr,
    pub name: &'static str,
    haproxy: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Hops {
    fn drop(&mut self) {
        if let Some(child) = &mut self.haproxy {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port free on 127.0.0.1 now (for configurations written in advance).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What the two HAProxy hops do with a connection.
#[derive(Clone, Copy)]
pub enum Layer {
    /// Copy bytes (`mode tcp`): the benchmark's baseline.
    Four,
    /// Terminate HTTP/2 on both sides of each hop (`mode http`, `proto h2`).
    Seven,
}

impl Layer {
    /// The setup's name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Four => "two L4 hops (HAProxy)",
            Layer::Seven => "two HTTP/2 hops (HAProxy)",
        }
    }
}

/// HAProxy's configuration: `hop1` → `hop2` → `target`.
fn haproxy_config(hop1: u16, hop2: u16, target: SocketAddr, layer: Layer) -> String {
    // The HTTP/2 hops get resi's windows (4 MiB per stream) and room for
    // as many streams; with HAProxy's defaults (64 KiB windows, 16 KiB
    // buffers) they moved half as much bulk data on the Zen 3 machine.
    let (mode, h2, tune) = match layer {
        Layer::Four => ("tcp", "", ""),
        Layer::Seven => (
            "http",
            " proto h2",
            "  tune.h2.initial-window-size 4194304\n  tune.h2.max-concurrent-streams 1024\n  tune.bufsize 65536\n",
        ),
    };
    format!(
        "global\n  maxconn 4096\n{tune}\
         defaults\n  mode {mode}\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         frontend hop1\n  bind 127.0.0.1:{hop1}{h2}\n  default_backend to_hop2\n\
         backend to_hop2\n  server s 127.0.0.1:{hop2}{h2}\n\
         frontend hop2\n  bind 127.0.0.1:{hop2}{h2}\n  default_backend to_target\n\
         backend to_target\n  server s {target}{h2}\n"
    )
}

/// HAProxy (`path`) in the foreground, once its first hop accepts.
pub async fn haproxy(path: &Path, target: SocketAddr, layer: Layer) -> Result<Hops, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let (hop1, hop2) = (free_port().map_err(|e| e.to_string())?, free_port().map_err(|e| e.to_string())?);
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(hop1, hop2, target, layer)).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let child = Command::new(path)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let addr: SocketAddr = ([127, 0, 0, 1], hop1).into();
    let hops = Hops { addr, name: layer.name(), haproxy: Some(child), _dir: Some(dir) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("HAProxy did not listen on {addr} within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(hops)
}

/// A tokio relay: every accepted connection is copied to `target`.
async fn relay(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a relay on 127.0.0.1");
    let addr = listener.local_addr().expect("relay address");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// Two chained tokio relays.
pub async fn tokio_relays(target: SocketAddr) -> Hops {
    let second = relay(target).await;
    Hops { addr: relay(second).await, name: "two L4 hops (tokio relay)", haproxy: None, _dir: None }
}
