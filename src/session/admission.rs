//! What unauthenticated Opens may cost an acceptor: the session table with
//! its pending/established split and the per-peer Open rates, checked and
//! updated under the registry's one lock.
//!
//! A session is *pending* from its Open until its first path merges. A
//! genuine dialler merges within milliseconds of its Open, so when pending
//! sessions are over a limit the *oldest* pending one gives way: a flood of
//! Opens only churns its own sessions, even when every peer shares one
//! address. Opens per peer address are rate-limited by a token bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::cookie::SessionId;
use crate::grpc::{Code, Status};
use super::{DiallerId, SessionHandle};

/// Peer addresses whose Open rate is remembered before idle ones are
/// forgotten.
const RATE_TABLE: usize = 10_000;

/// What unauthenticated Opens may cost an acceptor (`[Resi]` keys in
/// brackets; protocol §9, §10).
#[derive(Debug, Clone)]
pub struct OpenLimits {
    /// A session with no path merged this long after its Open is removed
    /// and its cookies revoked \[`OpenTimeout`, 5 s\].
    pub open_timeout: Duration,
    /// Established sessions (a path merged once) \[`MaxSessions`, 1024\];
    /// an Open beyond it is refused `RESOURCE_EXHAUSTED`.
    pub max_sessions: usize,
    /// Pending sessions in total \[`MaxPendingSessions`, 256\]; beyond it
    /// the oldest pending session is removed.
    pub max_pending: usize,
    /// Pending sessions per peer address \[`MaxPendingPerPeer`, 16\];
    /// beyond it that peer's oldest pending session is removed.
    pub max_pending_per_peer: usize,
    /// Opens per second per peer address, also the burst \[`OpenRatePerPeer`,
    /// 20; 0 = unlimited\]; beyond it Opens are refused `RESOURCE_EXHAUSTED`.
    pub open_rate_per_peer: u32,
}

impl Default for OpenLimits {
    fn default() -> Self {
        OpenLimits {
            open_timeout: Duration::from_secs(5),
            max_sessions: 1024,
            max_pending: 256,
            max_pending_per_peer: 16,
            open_rate_per_peer: 20,
        }
    }
}

/// One accepted session.
pub(super) struct Entry {
    pub handle: SessionHandle,
    pub peer: Option<IpAddr>,
    pub opened: Instant,
    /// A path has merged at least once (no longer pending).
    pub merged: bool,
    /// Who opened it (anonymous if the Open did not say).
    pub dialler: DiallerId,
}

/// Open tokens of one peer address (a token bucket).
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The session table and the per-peer Open rates, under one lock so that
/// checking a limit and taking a place are one step.
#[derive(Default)]
pub(super) struct Table {
    pub sessions: HashMap<SessionId, Entry>,
    rates: HashMap<IpAddr, Bucket>,
}

impl Table {
    /// Makes room for one more pending session from `peer`, or refuses:
    /// the per-peer Open rate, the established-session limit, then room
    /// among the pending sessions, made by removing the oldest pending one
    /// of this peer, or of anyone. Returns the sessions removed (to be
    /// closed, their cookies revoked).
    ///
    /// (Sessions a restarted dialler left behind are removed before, by
    /// the registry: their places count for the new one.)
    pub fn make_room(
        &mut self,
        limits: &OpenLimits,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<Vec<(SessionId, SessionHandle)>, Status> {
        if let Some(ip) = peer {
            self.take_open_token(ip, limits.open_rate_per_peer, now)?;
        }
        if self.sessions.values().filter(|e| e.merged).count() >= limits.max_sessions {
            return Err(Status::new(Code::ResourceExhausted, "too many RESI sessions at this hop"));
        }
        let mut evicted = Vec::new();
        if let Some(ip) = peer {
            let of_peer = |e: &Entry| !e.merged && e.peer == Some(ip);
            if self.sessions.values().filter(|e| of_peer(e)).count() >= limits.max_pending_per_peer {
                evicted.extend(self.evict_oldest_pending(of_peer));
            }
        }
        if self.sessions.values().filter(|e| !e.merged).count() >= limits.max_pending {
            evicted.extend(self.evict_oldest_pending(|e| !e.merged));
        }
        Ok(evicted)
    }

    /// Takes one Open token of `ip` (`rate` per second, burst `rate`; 0 is
    /// unlimited) or refuses the Open.
    fn take_open_token(&mut self, ip: IpAddr, rate: u32, now: Instant) -> Result<(), Status> {
        if rate == 0 {
            return Ok(());
        }
        let rate = rate as f64;
        let refill = |b: &Bucket| (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate);
        if self.rates.len() >= RATE_TABLE {
            self.rates.retain(|_, b| refill(b) < rate);
        }
        let bucket = self.rates.entry(ip).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = refill(bucket);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let msg = format!("too many RESI Opens from {ip} (limit {rate} per second)");
            return Err(Status::new(Code::ResourceExhausted, msg));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }

    /// Removes the oldest pending session matching `which`.
    fn evict_oldest_pending(&mut self, which: impl Fn(&Entry) -> bool) -> Option<(SessionId, SessionHandle)> {
        let oldest = self.sessions.iter().filter(|(_, e)| which(e)).min_by_key(|(_, e)| e.opened).map(|(id, _)| *id)?;
        self.sessions.remove(&oldest).map(|e| (oldest, e.handle))
    }

    /// The sessions `dialler` opened in an earlier run
    /// ([`DiallerId::is_superseded_by`]), whatever their paths.
    pub fn superseded_by(&self, dialler: &DiallerId) -> Vec<(SessionId, SessionHandle)> {
        let old = |(_, e): &(&SessionId, &Entry)| e.dialler.is_superseded_by(dialler);
        self.sessions.iter().filter(old).map(|(id, e)| (*id, e.handle.clone())).collect()
    }

    /// The session `id`, now marked as having had a path merged.
    pub fn merged(&mut self, id: &SessionId) -> Option<SessionHandle> {
        let entry = self.sessions.get_mut(id)?;
        entry.merged = true;
        Some(entry.handle.clone())
    }
}

