//! NKN transport: a client of the real NKN client protocol (nkn.org).
//!
//! The reference is `docs/nkn-client-protocol.md` in the shared notes (section
//! numbers `§n` below point there). The protocol logic is kept free of
//! sockets so that it can be tested with the vectors of §12 and reused by the
//! local relay node:
//!
//! - [`identity`]: Ed25519 identity, client addresses, client IDs, the
//!   Curve25519 conversion and the precomputed NaCl box key (§1, §6.1).
//! - [`crypto`]: XSalsa20-Poly1305 boxes and the end-to-end envelope
//!   (`payloads.Message`), single- and multi-destination schemes (§6).
//! - [`payload`]: the `payloads.Payload` layer: binary, text, ACK, reply
//!   (§5, §8.4).
//! - [`wire`]: NKN serialization, signatures (outbound, receipt, auth
//!   challenge), `ClientMessage` frames with zlib, and the JSON control
//!   messages of the WebSocket session (§3, §4, §7).
//! - [`rpc`]: seed JSON-RPC over HTTP (`getwsaddr`, `getnodestate`) (§2).
//! - [`client`]: one NKN client on one WebSocket, with reconnection (§3, §8).
//! - [`multiclient`]: `n` sub-clients `__i__.` with one message ID per send
//!   and dedup of arrivals (§9).
//! - [`node`]: the embedded local NKN node, a loopback relay that resi's
//!   client and the official SDKs work against (§11).

pub mod client;
pub mod crypto;
pub mod identity;
pub mod multiclient;
pub mod node;
pub mod payload;
pub mod rpc;
pub mod wire;

pub use client::{Client, ClientConfig, Received, Reply, SendOptions};
pub use identity::{Address, Identity};
pub use multiclient::{MultiClient, MultiClientConfig};

/// Errors of the NKN transport.
#[derive(Debug, thiserror::Error)]
pub enum NknError {
    /// A malformed NKN address (`[identifier.]hexpubkey`).
    #[error("invalid NKN address {0:?}: {1}")]
    InvalidAddress(String, &'static str),
    /// A public key that is not a valid Ed25519 point (or has small order).
    #[error("invalid public key")]
    InvalidPublicKey,
    /// Decryption or authentication of an envelope failed.
    #[error("decryption failed")]
    Decrypt,
    /// A malformed envelope, payload or frame.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A protobuf decode error.
    #[error("protobuf decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// An unencrypted message while unencrypted messages are not allowed.
    #[error("unencrypted message refused")]
    Unencrypted,
    /// Outbound message larger than the protocol allows (§4.6).
    #[error("message too large: {0} bytes")]
    MessageTooLarge(usize),
    /// Seed RPC failure (transport, HTTP status, JSON).
    #[error("rpc: {0}")]
    Rpc(String),
    /// The RPC server answered with a JSON-RPC error.
    #[error("rpc server error {code}: {message}")]
    RpcServer { code: i64, message: String },
    /// WebSocket failure.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The node refused `setClient` or sent something unexpected.
    #[error("node: {0}")]
    Node(String),
    /// No live connection to a node at the moment.
    #[error("not connected")]
    NotConnected,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// No reply or ACK arrived in time.
    #[error("timeout")]
    Timeout,
    /// zlib (de)compression failed.
    #[error("zlib: {0}")]
    Zlib(String),
}

/// Result alias for the NKN transport.
pub type Result<T, E = NknError> = std::result::Result<T, E>;

/// Size of a message ID (§5.4).
pub const MESSAGE_ID_SIZE: usize = 8;

/// The largest outbound message the client accepts: `len(payload) +
/// Σ(len(dest) + 64)` (§4.6).
pub const MAX_CLIENT_MESSAGE: usize = 4_000_000;

/// The node's cap on one (decompressed) client message, 4 MiB (§4.6).
pub const MAX_NODE_MESSAGE: usize = 4 * 1024 * 1024;
