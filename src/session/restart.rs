//! A restarted dialler frees, at once, the sessions its previous run left
//! behind (protocol §3.1, R-3.1-8 to R-3.1-11).
//!
//! Why: after a `kill -9` (or a crash) of a client gateway the acceptor
//! sees every path of the old session close, exactly as in an outage of
//! every path, so it keeps the session for the whole resume timeout (§8.4)
//! with its memory, its upstream HTTP/2 connection and its place in
//! `MaxSessions`. So a dialler says who it is in each Open: a stable name
//! and an *instance* drawn once per start. An Open from name N, instance I
//! ends every other session of N whose instance is another (non-empty)
//! one and that has no live path at that moment. A session with a live
//! path belongs to a running dialler (another gateway that was given the
//! same name) and is never touched; sessions opened without a name or an
//! instance never are.

use bytes::Bytes;
use rand::RngCore;

use crate::grpc::{Code, Status};
use crate::proto::resi;

/// Length of an instance drawn by [`DiallerId::new`] (and the only one
/// an acceptor takes besides none).
pub const INSTANCE_LEN: usize = 16;
/// Longest dialler name an acceptor takes, in bytes (`[Resi] Name` is at
/// most 64 characters).
pub const MAX_NAME_LEN: usize = 256;

/// Who a dialler is, as its Opens say (`OpenRequest.dialler`, `.instance`).
/// The default is anonymous: nothing is sent, and the sessions it opens are
/// never replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiallerId {
    /// Stable across restarts: the client gateway's `[Resi] Name`.
    pub name: String,
    /// Random, drawn once per start: the same in every Open of that run.
    pub instance: Bytes,
}

impl DiallerId {
    /// `name` with a fresh random instance (one per gateway start).
    pub fn new(name: impl Into<String>) -> DiallerId {
        let mut instance = [0u8; INSTANCE_LEN];
        rand::rng().fill_bytes(&mut instance);
        DiallerId { name: name.into(), instance: Bytes::copy_from_slice(&instance) }
    }

    /// Whether both the name and the instance are given (only such
    /// sessions are replaced, and only such Opens replace).
    pub fn is_named(&self) -> bool {
        !self.name.is_empty() && !self.instance.is_empty()
    }

    /// The identity an Open carries; refuses one that is malformed (a name
    /// over [`MAX_NAME_LEN`] bytes, an instance of another length than
    /// [`INSTANCE_LEN`]) with `INVALID_ARGUMENT`.
    pub fn from_open(req: &resi::OpenRequest) -> Result<DiallerId, Status> {
        if req.dialler.len() > MAX_NAME_LEN {
            let msg = format!("OpenRequest.dialler is {} bytes long (at most {MAX_NAME_LEN})", req.dialler.len());
            return Err(Status::new(Code::InvalidArgument, msg));
        }
        if !req.instance.is_empty() && req.instance.len() != INSTANCE_LEN {
            let msg = format!("OpenRequest.instance is {} bytes long (empty or {INSTANCE_LEN})", req.instance.len());
            return Err(Status::new(Code::InvalidArgument, msg));
        }
        Ok(DiallerId { name: req.dialler.clone(), instance: req.instance.clone() })
    }

    /// Whether a session opened by `self` was left behind by an earlier run
    /// of the dialler that `new` is: both named, the same name, another
    /// instance. (Whether it may be ended also needs it to have no live
    /// path; the registry checks that.)
    pub fn is_superseded_by(&self, new: &DiallerId) -> bool {
        self.is_named() && new.is_named() && self.name == new.name && self.instance != new.instance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_instance_of_the_same_named_dialler_supersedes() {
        let old = DiallerId::new("client");
        let new = DiallerId::new("client");
        assert_ne!(old.instance, new.instance, "each start draws its own instance");
        assert!(old.is_superseded_by(&new));
        assert!(!old.is_superseded_by(&old), "the same run never supersedes itself");
        assert!(!old.is_superseded_by(&DiallerId::new("other")));
        let anonymous = DiallerId::default();
        assert!(!anonymous.is_superseded_by(&new) && !old.is_superseded_by(&anonymous));
        let no_instance = DiallerId { name: "client".into(), instance: Bytes::new() };
        assert!(!no_instance.is_superseded_by(&new) && !old.is_superseded_by(&no_instance));
    }

    #[test]
    fn a_malformed_identity_is_refused() {
        let open = |dialler: &str, instance: &[u8]| resi::OpenRequest {
            dialler: dialler.into(),
            instance: Bytes::copy_from_slice(instance),
            ..Default::default()
        };
        assert!(DiallerId::from_open(&open("client", &[7; 16])).unwrap().is_named());
        assert!(!DiallerId::from_open(&open("", &[])).unwrap().is_named());
        let err = DiallerId::from_open(&open("client", &[7; 8])).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument);
        assert!(err.message.contains("instance"), "{}", err.message);
        let err = DiallerId::from_open(&open(&"n".repeat(MAX_NAME_LEN + 1), &[7; 16])).unwrap_err();
        assert!(err.message.contains("dialler"), "{}", err.message);
    }
}
