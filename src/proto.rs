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

/// The standard gRPC health checking messages (`grpc.health.v1`), which a
/// gateway answers itself ([`HEALTH_CHECK_PATH`], [`HEALTH_WATCH_PATH`]).
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/lib/grpc.health.v1.rs"));
}

/// The SolarNetwork ESI dialect (`proto/solarnetwork/esi`), wire-compatible
/// with SolarNetwork's own files. Only the messages: resi forwards the
/// services' calls as opaque gRPC, so the library needs no service code.
pub mod solarnetwork {
    /// Package `solarnetwork.esi`.
    pub mod esi {
        /// Messages and enums of `solarnetwork.esi.domain` (40 messages).
        pub mod domain {
            include!(concat!(env!("OUT_DIR"), "/lib/solarnetwork.esi.domain.rs"));
        }
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

/// gRPC paths of the standard health checking service, answered by every
/// gateway on its listeners (`docs/protocol.md`, "Health checking").
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
pub const HEALTH_WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";

/// Path of the reverse channel: one long-lived request, opened by a client
/// gateway over its session, that carries an HTTP/2 connection the other
/// way (see `docs/protocol.md`, "Reverse channel").
pub const REVERSE_PATH: &str = "/resi.Resi/Reverse";

#[cfg(test)]
mod tests {
    use super::solarnetwork::esi::domain::{
        datum_request::TimeStyleOneof, price_map_offer_response::AcceptOneof, DatumRequest, DerRoute,
        DurationRange, PriceMapOfferResponse, SignedInt32Range, TimeConcept, Uuid,
    };
    use prost::Message;

    fn hex(m: &impl Message) -> String {
        hex::encode(m.encode_to_vec())
    }

    /// The wire vectors of the ESI reference (esi-protocol §8); oneof members
    /// at their default value (reject, MOST_RECENT) are still sent.
    #[test]
    fn esi_wire_vectors() {
        let reject = PriceMapOfferResponse { accept_oneof: Some(AcceptOneof::Accept(false)), ..Default::default() };
        assert_eq!(hex(&reject), "1800");
        let accept = PriceMapOfferResponse { accept_oneof: Some(AcceptOneof::Accept(true)), ..Default::default() };
        assert_eq!(hex(&accept), "1801");
        let recent = DatumRequest {
            time_style_oneof: Some(TimeStyleOneof::TimeConcept(TimeConcept::MostRecent as i32)),
            ..Default::default()
        };
        assert_eq!(hex(&recent), "1800");
        assert_eq!(hex(&Uuid { hi: 1, lo: 2 }), "090100000000000000110200000000000000");
        let span = DurationRange {
            min: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            max: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
        };
        assert_eq!(hex(&span), "320208013a020802");
        assert_eq!(hex(&SignedInt32Range { min: -1, max: 1 }), "08011002");
        let route = DerRoute { exchange_uid: "a".into(), facility_uid: "b".into(), signature: None };
        assert_eq!(hex(&route), "0a0161120162");
        assert_eq!(PriceMapOfferResponse::decode(&b"\x18\x00"[..]).unwrap(), reject);
    }
}
