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
//! - [`FaultRelay::corrupt`]: relays, but flips one bit in a share of the
//!   bytes of one direction or both — a faulty link or NIC; the RESI
//!   frame check (CRC-32C) must catch it;
//! - [`FaultRelay::tamper`]: relays, but alters the payload of a share of
//!   the RESI DATA frames the dialler sends and recomputes their CRC-32C —
//!   an attacker on the path; only comparing copies catches it;
//! - [`FaultRelay::heal`]: back to relaying.
//!
//! The dialler-to-acceptor direction of a connection that starts with the
//! RESI preface is relayed frame by frame (whole frames, unchanged unless
//! tampered with), so tampering can start and stop at any time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which way of a relayed connection a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting side to the target (dialler to acceptor).
    Forward,
    /// From the target back to the connecting side.
    Backward,
    Both,
}

impl Direction {
    fn includes(self, forward: bool) -> bool {
        match self {
            Direction::Both => true,
            Direction::Forward => forward,
            Direction::Backward => !forward,
        }
    }
}

/// What a relay does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Blackhole,
    Killed,
    /// Relays, flipping one random bit in each byte with probability
    /// `per_million` / 1 000 000, in `direction`.
    Corrupt { per_million: u32, direction: Direction },
    /// Relays, altering one payload byte of each RESI DATA frame from the
    /// dialler with probability `per_million` / 1 000 000 and recomputing
    /// the frame's CRC-32C.
    Tamper { per_million: u32 },
}

impl Fault {
    /// Whether bytes flow (possibly altered).
    fn relays(&self) -> bool {
        !matches!(self, Fault::Blackhole | Fault::Killed)
    }
}

/// A share in 0.0..=1.0 as parts per million.
fn per_million(share: f64) -> u32 {
    (share.clamp(0.0, 1.0) * 1e6).round() as u32
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

    /// Flips one bit in `share` (0.0..=1.0) of the relayed bytes going
    /// `direction`, until `heal`.
    pub fn corrupt(&self, share: f64, direction: Direction) {
        self.fault.send_replace(Fault::Corrupt { per_million: per_million(share), direction });
    }

    /// Alters `share` (0.0..=1.0) of the RESI DATA frames the dialler sends
    /// through this relay and recomputes their CRC-32C, until `heal`.
    pub fn tamper(&self, share: f64) {
        self.fault.send_replace(Fault::Tamper { per_million: per_million(share) });
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
                _ = pump(ri, wo, rx.clone(), true) => {},
                _ = pump(ro, wi, rx, false) => {},
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
    forward: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // The dialler's side of a RESI path is relayed in whole frames.
    let mut framer = forward.then(Framer::default);
    loop {
        if fault.wait_for(Fault::relays).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(now) = fault.wait_for(Fault::relays).await.map(|f| *f) else { return };
        let mut out = match framer.as_mut() {
            Some(f) => f.push(&buf[..n], now),
            None => buf[..n].to_vec(),
        };
        if let Fault::Corrupt { per_million, direction } = now {
            if direction.includes(forward) {
                flip_bits(&mut out, per_million);
            }
        }
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Flips one random bit in each byte with probability `per_million` / 10⁶.
fn flip_bits(bytes: &mut [u8], per_million: u32) {
    let mut rng = rand::rng();
    for b in bytes.iter_mut() {
        if rng.random_range(0..1_000_000) < per_million {
            *b ^= 1 << rng.random_range(0..8);
        }
    }
}

/// Cuts the dialler-to-acceptor byte stream into RESI frames (after the
/// path preface), so whole DATA frames can be tampered with. Anything that
/// does not start with the preface is passed through untouched.
#[derive(Default)]
struct Framer {
    /// Bytes held until a whole frame (or the preface) is in.
    held: BytesMut,
    state: FramerState,
}

#[derive(Default, PartialEq)]
enum FramerState {
    #[default]
    Preface,
    Frames,
    Raw,
}

impl Framer {
    /// Takes newly read bytes; returns what may be sent on now.
    fn push(&mut self, data: &[u8], fault: Fault) -> Vec<u8> {
        if self.state == FramerState::Raw {
            return data.to_vec();
        }
        self.held.extend_from_slice(data);
        let mut out = Vec::with_capacity(self.held.len());
        if self.state == FramerState::Preface {
            let preface = crate::path::tcp::PREFACE;
            let n = self.held.len().min(preface.len());
            if self.held[..n] != preface[..n] {
                self.state = FramerState::Raw;
                out.extend_from_slice(&self.held.split());
                return out;
            }
            if n < preface.len() {
                return out;
            }
            out.extend_from_slice(&self.held.split_to(preface.len()));
            self.state = FramerState::Frames;
        }
        let header = crate::frame::HEADER_LEN;
        while self.held.len() >= header {
            let len = u32::from_be_bytes([self.held[4], self.held[5], self.held[6], self.held[7]]) as usize;
            if self.held.len() < header + len {
                break;
            }
            let mut frame = self.held.split_to(header + len);
            if let Fault::Tamper { per_million } = fault {
                let is_data = frame[0] == crate::frame::kind::DATA && len > 8;
                if is_data && rand::rng().random_range(0..1_000_000) < per_million {
                    let at = header + 8 + rand::rng().random_range(0..len - 8);
                    frame[at] ^= 0x20;
                    crate::frame::seal(&mut frame);
                }
            }
            out.extend_from_slice(&frame);
        }
        out
    }
}
