//! Generated protobuf messages (from `proto/`, compiled by `build.rs`).

/// The extensible ESI: `Extension`, `ModifyRequest`, `ModifyResponse`.
pub mod esi {
    include!(concat!(env!("OUT_DIR"), "/lib/esi.rs"));
}

/// The RESI redundancy extension and path control messages.
pub mod resi {
    include!(concat!(env!("OUT_DIR"), "/lib/resi.rs"));
}

/// NKN client ⇄ node frames and the end-to-end payload layer.
pub mod nkn {
    include!(concat!(env!("OUT_DIR"), "/lib/nkn.rs"));
    pub mod payloads {
        include!(concat!(env!("OUT_DIR"), "/lib/nkn.payloads.rs"));
    }
}

/// Extension id of the RESI redundancy extension.
pub const REDUNDANCY_EXTENSION_ID: u32 = 1;

/// Extension id of the hop-information extension: answered by the first
/// resi hop that sees it, with that hop's name and version (useful to find
/// out which hop handled a call).
pub const HOP_INFO_EXTENSION_ID: u32 = 2;

/// gRPC path of the Modify call.
pub const MODIFY_PATH: &str = "/esi.Esi/Modify";

/// Path of the reverse channel: one long-lived request, opened by a client
/// gateway over its session, that carries an HTTP/2 connection the other
/// way (see `docs/protocol.md`, "Reverse channel").
pub const REVERSE_PATH: &str = "/resi.Resi/Reverse";
