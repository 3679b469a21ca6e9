//! The dialling side of a session. (Skeleton; being written.)

use super::{SessionConfig, SessionError, SessionHandle, SessionStream};
use crate::proto::resi;

/// The Open request a gateway sends (inside Modify) to ask for a session.
pub fn open_request(cfg: &SessionConfig, paths: usize) -> resi::OpenRequest {
    resi::OpenRequest {
        version: 1,
        mode: match cfg.mode {
            super::Mode::Strict => resi::Mode::Strict as i32,
            super::Mode::Permissive => resi::Mode::Permissive as i32,
        },
        cookies: paths.clamp(1, 16) as u32,
    }
}

/// Joins one TCP path per address to the session `opened` describes and
/// keeps redialling lost ones. Returns once at least one path is merged.
pub async fn connect_tcp(
    _opened: resi::OpenResponse,
    _addrs: Vec<String>,
    _cfg: SessionConfig,
) -> Result<(SessionStream, SessionHandle), SessionError> {
    unimplemented!("skeleton")
}
