//! RESI paths over TCP.

/// First bytes a dialler writes on a TCP path; a gateway's listener tells a
/// RESI path from HTTP/2 (whose preface starts `PRI `) by them.
pub const PREFACE: &[u8; 8] = b"RESI\r\n\x00\x01";
