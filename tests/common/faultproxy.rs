//! A TCP relay with fault controls (kill, black-hole, heal) for path tests.
//!
//! - `kill`: closes every relayed connection and refuses new ones (accepts
//!   and closes at once) until `heal`.
//! - `blackhole`: keeps connections open but stops relaying in both
//!   directions — bytes stay queued in the kernel, as when a link silently
//!   drops everything; new connections are accepted and left silent.
//! - `heal`: back to relaying.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Blackhole,
    Killed,
}

pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (fault, _) = watch::channel(Fault::Pass);
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (f, c) = (fault.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { return };
                if *f.borrow() == Fault::Killed {
                    drop(inbound);
                    continue;
                }
                let rx = f.subscribe();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = pump(ri, wo, rx.clone());
                    let b = pump(ro, wi, rx);
                    tokio::select! { _ = a => {}, _ = b => {} }
                });
                let mut conns = c.lock().unwrap();
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        FaultProxy { addr, fault, conns, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn kill(&self) {
        self.fault.send_replace(Fault::Killed);
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn blackhole(&self) {
        self.fault.send_replace(Fault::Blackhole);
    }

    pub fn heal(&self) {
        self.fault.send_replace(Fault::Pass);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.conns.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if fault.wait_for(|f| *f == Fault::Pass).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if fault.wait_for(|f| *f == Fault::Pass).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
