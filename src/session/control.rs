//! CONTROL messages (protocol §5.6) and the dialler's merge cookies.
//!
//! Both are protocol decisions — when to ask for fresh cookies, how many an
//! acceptor grants, what a `Close` means — so they live beside the state
//! machine, with no clock and no I/O of their own: the machine calls them
//! with the current time, and the in-memory simulation covers them like
//! the rest of the protocol. Issuing a cookie needs the acceptor's cookie
//! jar (shared by all its sessions, and random), so the machine only says
//! how many to issue and the driver hands them back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::SessionError;
use crate::grpc::Code;
use crate::proto::resi;

/// Most cookies a `CookieRequest` may ask for (§5.6).
pub const MAX_COOKIES: u32 = 16;
/// A dialler asks again for cookies at most this often while a request is
/// unanswered.
const REASK: Duration = Duration::from_secs(2);

/// Merge cookies held by the dialling side.
#[derive(Debug)]
pub struct Wallet {
    cookies: VecDeque<Bytes>,
    issued: Instant,
    ttl: Duration,
    /// How many it should hold: one per path.
    target: usize,
    refresh_asked: Option<Instant>,
    /// Cookies taken by a merge attempt that has not told how it went.
    out: usize,
}

impl Wallet {
    pub fn new(cookies: Vec<Bytes>, ttl: Duration, now: Instant) -> Wallet {
        let target = cookies.len().max(1);
        Wallet { cookies: cookies.into(), issued: now, ttl, target, refresh_asked: None, out: 0 }
    }

    /// A cookie for a merge attempt, which reports back with
    /// [`Wallet::give_back`], [`Wallet::merged`] or [`Wallet::spent`].
    pub fn take(&mut self) -> Option<Bytes> {
        let cookie = self.cookies.pop_front()?;
        self.out += 1;
        Some(cookie)
    }

    /// The attempt did not reach the peer: the cookie is still good.
    pub fn give_back(&mut self, cookie: Bytes) {
        self.out = self.out.saturating_sub(1);
        self.cookies.push_back(cookie);
    }

    /// The merge succeeded and brought the cookie that replaces the one used.
    pub fn merged(&mut self, next_cookie: Bytes) {
        self.give_back(next_cookie);
    }

    /// The peer consumed the cookie without a merge (refused it).
    pub fn spent(&mut self) {
        self.out = self.out.saturating_sub(1);
    }

    /// No cookie left, and no attempt out that could bring one back.
    pub fn exhausted(&self) -> bool {
        self.cookies.is_empty() && self.out == 0
    }

    /// A `CookieGrant` replaces the whole set.
    pub fn replace(&mut self, cookies: Vec<Bytes>, ttl: Duration, now: Instant) {
        self.cookies = cookies.into();
        self.issued = now;
        self.ttl = ttl;
        self.refresh_asked = None;
    }

    /// When fresh cookies should be asked for next: before the set reaches
    /// half its lifetime, or as soon as it is short of one per path; an
    /// unanswered request is repeated after [`REASK`].
    pub fn refresh_at(&self) -> Instant {
        let due = if self.cookies.len() < self.target { self.issued } else { self.issued + self.ttl / 2 };
        match self.refresh_asked {
            Some(asked) => due.max(asked + REASK),
            None => due,
        }
    }

    /// The `CookieRequest` to send now, if one is due (and notes it as asked).
    pub fn poll_request(&mut self, now: Instant) -> Option<Bytes> {
        if now < self.refresh_at() {
            return None;
        }
        self.refresh_asked = Some(now);
        Some(cookie_request(self.target as u32))
    }

    /// Cookies held now (not counting those out on an attempt).
    pub fn len(&self) -> usize {
        self.cookies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }
}

/// What a received CONTROL body asks of this end.
#[derive(Debug, PartialEq)]
pub enum Received {
    /// The dialler wants this many fresh cookies (already clamped to 1–16).
    CookieRequest(u32),
    CookieGrant { cookies: Vec<Bytes>, ttl: Duration },
    /// The peer ended the session.
    Close(SessionError),
    /// Undecodable or empty: ignored (§5.6).
    Ignored,
}

/// Decodes a CONTROL body.
pub fn decode(body: Bytes) -> Received {
    let Ok(control) = resi::Control::decode(body) else { return Received::Ignored };
    match control.msg {
        Some(resi::control::Msg::CookieRequest(req)) => Received::CookieRequest(req.count.clamp(1, MAX_COOKIES)),
        Some(resi::control::Msg::CookieGrant(grant)) => {
            Received::CookieGrant { cookies: grant.cookies, ttl: Duration::from_millis(grant.cookie_ttl_ms as u64) }
        }
        Some(resi::control::Msg::Close(close)) => {
            let reason = close.reason.unwrap_or_default();
            Received::Close(match Code::from_i32(reason.code) {
                Code::DataLoss => SessionError::PeerMismatch(reason.message),
                _ => SessionError::PeerClosed(reason.message),
            })
        }
        None => Received::Ignored,
    }
}

fn encode(msg: resi::control::Msg) -> Bytes {
    resi::Control { msg: Some(msg) }.encode_to_vec().into()
}

/// A `CookieRequest` for `count` cookies.
pub fn cookie_request(count: u32) -> Bytes {
    encode(resi::control::Msg::CookieRequest(resi::CookieRequest { count }))
}

/// A `CookieGrant` of `cookies`, valid for `ttl`.
pub fn cookie_grant(cookies: Vec<Bytes>, ttl: Duration) -> Bytes {
    encode(resi::control::Msg::CookieGrant(resi::CookieGrant { cookies, cookie_ttl_ms: ttl.as_millis() as u32 }))
}

/// The `Close` that tells the peer why this end ended the session: code 0
/// for a normal end, `DATA_LOSS` for copies that disagreed, `ABORTED` for
/// any other failure (§5.6).
pub fn close(err: &SessionError) -> Bytes {
    let code = match err {
        SessionError::Closed => Code::Ok,
        e if e.is_data_loss() => Code::DataLoss,
        _ => Code::Aborted,
    };
    let status = resi::Status { code: code as i32, message: err.to_string() };
    encode(resi::control::Msg::Close(resi::Close { reason: Some(status) }))
}
