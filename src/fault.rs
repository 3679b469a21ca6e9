//! A TCP relay with fault controls, as a test aid: put one in front of each
//! path of a gateway pair and cut, silence or heal that path on demand.
//!
//! Not for production traffic. Real sockets on loopback:
//!
//! - [`FaultRelay::kill`]: closes every relayed connection and refuses new
//!   ones (accepts and closes at once) until `heal`, as when a link goes
//!   down and the peer's connection is reset;
//! - [`FaultRelay::blackhole`]: keeps connections open but stops relaying in
//!   both directions — bytes stay queued in the kernel, as when a link
//!   silently drops everything; new connections are accepted and left
//!   silent;
//! - [`FaultRelay::heal`]: back to relaying.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a relay does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Blackhole,
    Killed,
}

/// A fault-injecting TCP relay to one target; stops when dropped.
pub struct FaultRelay {
    addr: SocketAddr,
    target: SocketAddr,
    fault: watch::Sender<Fault>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FaultRelay {
    /// Listens on a free port of 127.0.0.1 and relays to `target`.
    pub async fn start(target: SocketAddr) -> FaultRelay {
        FaultRelay::bind(target).expect("bind a relay on 127.0.0.1")
    }

    /// Like [`FaultRelay::start`], without awaiting; must be called inside a
    /// tokio runtime.
    pub fn bind(target: SocketAddr) -> std::io::Result<FaultRelay> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let (fault, _) = watch::channel(Fault::Pass);
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, target, fault.clone(), conns.clone()));
        Ok(FaultRelay { addr, target, fault, conns, accept })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where traffic goes.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    pub fn kill(&self) {
        self.fault.send_replace(Fault::Killed);
        self.abort_conns();
    }

    pub fn blackhole(&self) {
        self.fault.send_replace(Fault::Blackhole);
    }

    pub fn heal(&self) {
        self.fault.send_replace(Fault::Pass);
    }

    /// Stops listening and cuts every connection.
    pub fn close(&self) {
        self.accept.abort();
        self.abort_conns();
    }

    fn abort_conns(&self) {
        for task in self.conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    fault: watch::Sender<Fault>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { return };
        if *fault.borrow() == Fault::Killed {
            drop(inbound);
            continue;
        }
        let rx = fault.subscribe();
        let task = tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::select! {
                _ = pump(ri, wo, rx.clone()) => {},
                _ = pump(ro, wi, rx) => {},
            }
        });
        let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|t| !t.is_finished());
        conns.push(task);
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
