//! The gateway pair as operators run it: two `resi gateway` processes from
//! TOML files, each with its own runtime. What a check from outside
//! measures; the in-process pair shares the bench's runtime with the client
//! and the node, so its calls never wake another process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::echo::{echo_client, Msg};

/// The two processes; dropping it stops them.
pub struct ProcessPair {
    /// Where the client gateway listens.
    pub addr: SocketAddr,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for ProcessPair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_addr() -> Result<SocketAddr, String> {
    let port = crate::hops::free_port().map_err(|e| format!("no free port: {e}"))?;
    Ok(([127, 0, 0, 1], port).into())
}

fn quoted(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
}

fn spawn(resi: &Path, config: &Path, log: &Path) -> Result<Child, String> {
    let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new(resi)
        .args(["gateway", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", resi.display()))
}

/// An end gateway (two TCP listeners, forwarding to `node`) and a client
/// gateway joined to it by two TCP paths, both permissive; ready once a
/// call through them is answered (20 s at most).
pub async fn start(resi: &PathBuf, node: SocketAddr) -> Result<ProcessPair, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let paths = [free_addr()?, free_addr()?];
    let listen = free_addr()?;
    let end = format!("[Tcp]\nListen = [{}]\nAddress = \"{node}\"\n[Resi]\nMode = \"permissive\"\n", quoted(&paths));
    let client = format!("[Tcp]\nListen = \"{listen}\"\nAddress = [{}]\n[Resi]\nMode = \"permissive\"\n", quoted(&paths));
    let mut children = Vec::new();
    for (name, text) in [("end", end), ("client", client)] {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        children.push(spawn(resi, &config, &dir.path().join(format!("{name}.log")))?);
    }
    let pair = ProcessPair { addr: listen, children, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            let mut c = echo_client(listen).await;
            let ping = Msg { body: Bytes::from_static(b"ready?"), count: 0, note: String::new() };
            if c.unary(ping).await.is_ok() {
                return Ok(pair);
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(pair._dir.path().join("client.log")).unwrap_or_default();
            return Err(format!("the resi gateway processes did not answer within 20 s; client gateway's log:\n{log}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
