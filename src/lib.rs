//! resi — the Redundant Energy Services Interface.
//!
//! A resi gateway is a gRPC proxy for ESI traffic. A pair of gateways (the
//! *client gateway* in front of ESI clients, the *end gateway* in front of an
//! ESI server) carries every call over a *session* that runs on several
//! transport *paths* at once, numbering every byte and removing duplicates.
//! Redundancy is negotiated through the extensible ESI call `Modify`.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration file (compatible with the original
//!   RESI gateway) and its validation errors.
//! - [`proto`]: generated protobuf messages (`esi.*`, `resi.*`).
//! - [`grpc`]: small gRPC helpers: status codes, message framing, responses a
//!   gateway answers by itself.
//! - [`frame`]: path frames and their codec — the wire format on one path.
//! - [`session`]: the redundant session. [`session::machine`] is the protocol
//!   state machine (no sockets, no clock of its own); [`session::driver`]
//!   runs it on tokio and exposes the session as a byte stream.
//! - [`cookie`]: merge cookies: issue, redeem once, expire.
//! - [`nkn`]: the NKN transport: identity, end-to-end crypto, wire frames
//!   and signatures, seed RPC, [`nkn::Client`] and [`nkn::MultiClient`],
//!   and [`nkn::node`], the embedded local NKN node (a loopback relay that
//!   resi's client and the official NKN SDKs work against).
//! - [`path`]: transports that carry path frames ([`path::tcp`]).
//! - [`extension`]: `Modify` dispatch and the extension registry.
//! - [`gateway`]: listener, protocol sniffing, call forwarding, upstream
//!   discovery, graceful shutdown.
//! - [`cli`]: the `resi` command.
//! - `py` (feature `python`): the thin PyO3 bindings.

pub mod cli;
pub mod config;
pub mod cookie;
pub mod extension;
pub mod frame;
pub mod gateway;
pub mod grpc;
pub mod nkn;
pub mod path;
pub mod proto;
pub mod session;

#[cfg(feature = "python")]
mod py;
