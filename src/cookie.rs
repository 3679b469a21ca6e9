//! Merge cookies: the capability that lets a new path join a session.
//!
//! A cookie is 24 bytes from the thread-local CSPRNG (ChaCha, seeded from
//! the OS), bound to one session, good for exactly one merge, and valid for
//! a limited time. Used cookies are remembered until they would have
//! expired, so that a replay is refused as "already used" rather than as
//! "unknown" — the two mean different things to an operator.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::grpc::{Code, Status};

/// Length of a cookie in bytes (192 bits).
pub const COOKIE_LEN: usize = 24;

/// Identifies a session (16 random bytes).
pub type SessionId = [u8; 16];

/// A fresh random session id.
pub fn new_session_id() -> SessionId {
    let mut id = [0u8; 16];
    rand::rng().fill_bytes(&mut id);
    id
}

/// Why a cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CookieError {
    #[error("unknown merge cookie")]
    Unknown,
    #[error("merge cookie already used")]
    Used,
    #[error("merge cookie expired")]
    Expired,
}

impl From<CookieError> for Status {
    fn from(e: CookieError) -> Status {
        let code = match e {
            CookieError::Used => Code::PermissionDenied,
            CookieError::Unknown | CookieError::Expired => Code::Unauthenticated,
        };
        Status::new(code, e.to_string())
    }
}

struct Issued {
    session: SessionId,
    expires: Instant,
    /// When even a refusal by name ("used", "expired") is no longer owed:
    /// one lifetime after `expires`.
    forget: Instant,
}

/// All cookies a gateway has issued and not yet seen redeemed or expire.
#[derive(Default)]
pub struct CookieJar {
    live: HashMap<Vec<u8>, Issued>,
    /// Presented cookies, with when to forget them.
    used: HashMap<Vec<u8>, Instant>,
}

impl CookieJar {
    /// Issues a cookie for `session`, valid for `ttl` from `now`.
    pub fn issue(&mut self, session: SessionId, ttl: Duration, now: Instant) -> bytes::Bytes {
        self.purge(now);
        let mut cookie = vec![0u8; COOKIE_LEN];
        rand::rng().fill_bytes(&mut cookie);
        self.live.insert(cookie.clone(), Issued { session, expires: now + ttl, forget: now + 2 * ttl });
        cookie.into()
    }

    /// Redeems a cookie: it is consumed whatever the outcome.
    pub fn redeem(&mut self, cookie: &[u8], now: Instant) -> Result<SessionId, CookieError> {
        if let Some(issued) = self.live.remove(cookie) {
            self.used.insert(cookie.to_vec(), issued.forget);
            if now >= issued.expires {
                return Err(CookieError::Expired);
            }
            return Ok(issued.session);
        }
        match self.used.get(cookie) {
            Some(_) => Err(CookieError::Used),
            None => Err(CookieError::Unknown),
        }
    }

    /// Forgets every cookie of a session that has ended.
    pub fn revoke_session(&mut self, session: &SessionId) {
        self.live.retain(|_, i| &i.session != session);
    }

    /// Cookies currently redeemable (for tests and statistics).
    pub fn live_count(&self) -> usize {
        self.live.values().filter(|i| i.expires > Instant::now()).count()
    }

    /// Forgets what no longer needs a refusal by name. An expired cookie
    /// that was never presented stays until `forget`, so presenting it
    /// then is still answered "expired".
    fn purge(&mut self, now: Instant) {
        self.live.retain(|_, i| i.forget > now);
        self.used.retain(|_, forget| *forget > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_single_use_bound_and_expires() {
        let mut jar = CookieJar::default();
        let now = Instant::now();
        let s = new_session_id();
        let c = jar.issue(s, Duration::from_secs(10), now);
        assert_eq!(c.len(), COOKIE_LEN);
        assert_eq!(jar.redeem(&c, now), Ok(s));
        assert_eq!(jar.redeem(&c, now), Err(CookieError::Used));
        assert_eq!(jar.redeem(b"forged", now), Err(CookieError::Unknown));
        let late = jar.issue(s, Duration::from_secs(1), now);
        assert_eq!(jar.redeem(&late, now + Duration::from_secs(2)), Err(CookieError::Expired));
        assert_eq!(jar.redeem(&late, now + Duration::from_secs(2)), Err(CookieError::Used));
        let revoked = jar.issue(s, Duration::from_secs(10), now);
        jar.revoke_session(&s);
        assert_eq!(jar.redeem(&revoked, now), Err(CookieError::Unknown));
    }

    #[test]
    fn issuing_does_not_forget_used_or_expired_cookies_within_a_lifetime() {
        let mut jar = CookieJar::default();
        let now = Instant::now();
        let s = new_session_id();
        let ttl = Duration::from_secs(10);
        let used = jar.issue(s, ttl, now);
        assert_eq!(jar.redeem(&used, now), Ok(s));
        let expired = jar.issue(s, ttl, now);
        // Other sessions' cookies are issued after both expired.
        let later = now + Duration::from_secs(15);
        jar.issue(new_session_id(), ttl, later);
        assert_eq!(jar.redeem(&used, later), Err(CookieError::Used));
        assert_eq!(jar.redeem(&expired, later), Err(CookieError::Expired));
        // Past one more lifetime they are forgotten: the jar stays bounded.
        let much_later = now + Duration::from_secs(21);
        jar.issue(new_session_id(), ttl, much_later);
        assert_eq!(jar.redeem(&used, much_later), Err(CookieError::Unknown));
    }

    #[test]
    fn cookies_are_random() {
        let mut jar = CookieJar::default();
        let now = Instant::now();
        let s = new_session_id();
        let a = jar.issue(s, Duration::from_secs(1), now);
        let b = jar.issue(s, Duration::from_secs(1), now);
        assert_ne!(a, b);
        assert_ne!(new_session_id(), s);
    }
}
