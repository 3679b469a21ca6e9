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
//! - [`FaultRelay::delay`]: relays every chunk `latency` (plus a random
//!   `0..jitter`) after it arrived, in order — a long or busy link;
//! - [`FaultRelay::bandwidth`]: relays at most that many bytes a second in
//!   each direction — a thin link;
//! - [`FaultRelay::flap`]: goes down (black-holed or killed) and up again
//!   on a schedule, by itself, for a bounded time;
//! - [`FaultRelay::heal`]: back to relaying at full speed.
//!
//! Delay and bandwidth shape the traffic and combine with the faults
//! above; `heal` clears both. Loss, reorder and duplication are faults of
//! message paths, not of a byte stream: the local NKN node has them
//! ([`crate::nkn::node::LocalNode`]).
//!
//! The dialler-to-acceptor direction of a connection that starts with the
//! RESI preface is relayed frame by frame (whole frames, unchanged unless
//! tampered with), so tampering can start and stop at any time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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

/// How a relay shapes the traffic it passes (both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Added to every chunk's trip.
    pub latency: Duration,
    /// A random extra of `0..jitter` per chunk (order is kept).
    pub jitter: Duration,
    /// Bytes per second in each direction (None: unlimited).
    pub rate: Option<u64>,
}

impl Shape {
    /// When a chunk read now may leave, never before the previous one.
    fn release(&self, previous: Instant) -> Instant {
        let mut extra = self.latency;
        if !self.jitter.is_zero() {
            extra += self.jitter.mul_f64(rand::rng().random::<f64>());
        }
        (Instant::now() + extra).max(previous)
    }

    /// Largest piece written at once (a bandwidth limit paces small pieces).
    fn piece(&self) -> usize {
        self.rate.map_or(64 * 1024, |r| (r / 50).clamp(512, 16 * 1024) as usize)
    }
}

/// How a flapping relay goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flap {
    Blackhole,
    Kill,
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
    shape: watch::Sender<Shape>,
    conns: Conns,
    accept: JoinHandle<()>,
    /// The running flap schedule, if any.
    flapping: Mutex<Option<JoinHandle<()>>>,
}

type Conns = Arc<Mutex<Vec<JoinHandle<()>>>>;

fn abort_all(conns: &Conns) {
    for task in conns.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        task.abort();
    }
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
        let (shape, _) = watch::channel(Shape::default());
        let conns: Conns = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, target, fault.clone(), shape.clone(), conns.clone()));
        Ok(FaultRelay { addr, target, fault, shape, conns, accept, flapping: Mutex::default() })
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

    /// The current shaping.
    pub fn shape(&self) -> Shape {
        *self.shape.borrow()
    }

    /// Whether a flap schedule is running.
    pub fn is_flapping(&self) -> bool {
        self.flapping.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Closes every relayed connection and refuses new ones until `heal`.
    pub fn kill(&self) {
        self.stop_flapping();
        self.set(Fault::Killed);
    }

    /// Keeps connections open but relays nothing until `heal`.
    pub fn blackhole(&self) {
        self.stop_flapping();
        self.set(Fault::Blackhole);
    }

    /// Relays again, at full speed: clears the fault, the shaping and a
    /// flap schedule.
    pub fn heal(&self) {
        self.stop_flapping();
        self.shape.send_replace(Shape::default());
        self.set(Fault::Pass);
    }

    /// Flips one bit in `share` (0.0..=1.0) of the relayed bytes going
    /// `direction`, until `heal`.
    pub fn corrupt(&self, share: f64, direction: Direction) {
        self.stop_flapping();
        self.set(Fault::Corrupt { per_million: per_million(share), direction });
    }

    /// Alters `share` (0.0..=1.0) of the RESI DATA frames the dialler sends
    /// through this relay and recomputes their CRC-32C, until `heal`.
    pub fn tamper(&self, share: f64) {
        self.stop_flapping();
        self.set(Fault::Tamper { per_million: per_million(share) });
    }

    /// Delays every relayed chunk by `latency` plus a random `0..jitter`
    /// (in order), until `heal`; zero for both ends the delay.
    pub fn delay(&self, latency: Duration, jitter: Duration) {
        self.shape.send_modify(|s| {
            s.latency = latency;
            s.jitter = jitter;
        });
    }

    /// Relays at most `bytes_per_sec` in each direction (None: unlimited),
    /// until `heal`.
    pub fn bandwidth(&self, bytes_per_sec: Option<u64>) {
        self.shape.send_modify(|s| s.rate = bytes_per_sec.filter(|r| *r > 0));
    }

    /// Flaps on a schedule, by itself: relays for `up`, goes down `how`
    /// for `down`, again and again for `total`, then relays (a down phase
    /// is cut short at the end). Returns at once; another fault or `heal`
    /// ends the schedule early.
    pub fn flap(&self, up: Duration, down: Duration, total: Duration, how: Flap) {
        self.stop_flapping();
        self.set(Fault::Pass);
        let (fault, conns) = (self.fault.clone(), self.conns.clone());
        let task = tokio::spawn(async move {
            let end = Instant::now() + total;
            let down_fault = match how {
                Flap::Blackhole => Fault::Blackhole,
                Flap::Kill => Fault::Killed,
            };
            while Instant::now() < end {
                tokio::time::sleep_until((Instant::now() + up).min(end)).await;
                if Instant::now() >= end {
                    break;
                }
                fault.send_replace(down_fault);
                if how == Flap::Kill {
                    abort_all(&conns);
                }
                tokio::time::sleep_until((Instant::now() + down).min(end)).await;
                fault.send_replace(Fault::Pass);
            }
            fault.send_replace(Fault::Pass);
        });
        *self.flapping.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Stops listening and cuts every connection.
    pub fn close(&self) {
        self.stop_flapping();
        self.accept.abort();
        abort_all(&self.conns);
    }

    fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
        if fault == Fault::Killed {
            abort_all(&self.conns);
        }
    }

    fn stop_flapping(&self) {
        if let Some(task) = self.flapping.lock().unwrap_or_else(|e| e.into_inner()).take() {
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
    shape: watch::Sender<Shape>,
    conns: Conns,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { return };
        if *fault.borrow() == Fault::Killed {
            drop(inbound);
            continue;
        }
        let (rx, shape) = (fault.subscribe(), shape.subscribe());
        let task = tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::select! {
                _ = pump(ri, wo, rx.clone(), shape.clone(), true) => {},
                _ = pump(ro, wi, rx, shape, false) => {},
            }
        });
        let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|t| !t.is_finished());
        conns.push(task);
    }
}

/// Chunks read but not yet written, per direction (with a delay they wait
/// until their release time); reading pauses while this many wait.
const QUEUED_CHUNKS: usize = 1024;

/// One direction of a relayed connection: reads, applies the fault, and
/// writes each chunk at once — or, while a delay or bandwidth limit is set,
/// queues it until its release time and writes it at the allowed rate.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<Fault>,
    shape: watch::Receiver<Shape>,
    forward: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    // The dialler's side of a RESI path is relayed in whole frames.
    let mut framer = forward.then(Framer::default);
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut pacer = Pacer::default();
    loop {
        let now = *fault.borrow_and_update();
        let due = queue.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            changed = fault.changed() => if changed.is_err() { return },
            _ = sleep_past(due.unwrap_or_else(Instant::now)), if now.relays() && due.is_some() => {
                let Some((_, chunk)) = queue.pop_front() else { continue };
                let shaping = *shape.borrow();
                if pacer.write(&mut to, &chunk, shaping).await.is_err() {
                    return;
                }
            }
            read = from.read(&mut buf), if now.relays() && queue.len() < QUEUED_CHUNKS => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut out = match framer.as_mut() {
                    Some(f) => f.push(&buf[..n], now),
                    None => buf[..n].to_vec(),
                };
                if let Fault::Corrupt { per_million, direction } = now {
                    if direction.includes(forward) {
                        flip_bits(&mut out, per_million);
                    }
                }
                let shaping = *shape.borrow();
                if queue.is_empty() && shaping == Shape::default() {
                    if to.write_all(&out).await.is_err() {
                        return;
                    }
                } else {
                    let last = queue.back().map_or_else(Instant::now, |(at, _)| *at);
                    queue.push_back((shaping.release(last), out));
                }
            }
        }
    }
    // The sender finished: what is still queued goes out on time.
    while let Some((at, chunk)) = queue.pop_front() {
        sleep_past(at).await;
        let shaping = *shape.borrow();
        if pacer.write(&mut to, &chunk, shaping).await.is_err() {
            return;
        }
    }
}

/// Writes at the bandwidth limit: in small pieces, each after the previous
/// one's share of the second.
#[derive(Default)]
struct Pacer {
    /// When the limit lets the next byte go (None: no limit in force yet).
    free_at: Option<Instant>,
}

impl Pacer {
    async fn write(&mut self, to: &mut tokio::net::tcp::OwnedWriteHalf, chunk: &[u8], shape: Shape) -> std::io::Result<()> {
        let Some(rate) = shape.rate else {
            self.free_at = None;
            return to.write_all(chunk).await;
        };
        for piece in chunk.chunks(shape.piece()) {
            let at = self.free_at.unwrap_or_else(Instant::now);
            sleep_past(at).await;
            self.free_at = Some(at.max(Instant::now()) + Duration::from_secs_f64(piece.len() as f64 / rate as f64));
            to.write_all(piece).await?;
        }
        Ok(())
    }
}

/// Sleeps until `at` unless it has passed (a timer for a past instant still
/// waits for the next timer tick, which would delay every chunk).
async fn sleep_past(at: Instant) {
    if at > Instant::now() {
        tokio::time::sleep_until(at).await;
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
