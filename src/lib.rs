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
//!   RESI gateway): serde-derived section structs behind a pre-pass that
//!   matches names, the rules across keys, warnings, and every error found.
//! - [`proto`]: generated protobuf messages (`esi.*`, `resi.*`, `nkn.*`, and the
//!   SolarNetwork ESI dialect's `solarnetwork.esi.domain.*`).
//! - [`grpc`]: small gRPC helpers: status codes and the one reading of a
//!   response's status, message framing (the one buffering decoder,
//!   [`grpc::Decoder`], and the non-buffering counter of forwarded bodies,
//!   [`grpc::MessageTracker`]), responses a gateway answers by itself.
//! - [`frame`]: path frames and their codec — the wire format on one path.
//! - [`session`]: the redundant session. [`session::machine`] is the protocol
//!   state machine (no sockets, no clock of its own; CONTROL and cookies
//!   included); [`session::driver`] runs it on tokio, one future per
//!   session, and exposes the session as a byte stream.
//! - [`cookie`]: merge cookies: issue, redeem once, expire.
//! - [`nkn`]: the NKN transport: identity, end-to-end crypto, wire frames
//!   and signatures, seed RPC, [`nkn::Client`] and [`nkn::MultiClient`],
//!   and [`nkn::node`], the embedded local NKN node (a loopback relay that
//!   resi's client and the official NKN SDKs work against).
//! - [`tls`]: TLS 1.3 (rustls) for the listener and TCP paths: PEM
//!   loading, server/client configurations, channel bindings of merges.
//! - [`path`]: transports that carry path frames ([`path::tcp`],
//!   [`path::nkn`]), the path types a session is handed, and the path
//!   handshake (below the session: it never uses it).
//! - [`extension`]: `Modify` dispatch and the extension registry.
//! - [`gateway`]: listener and protocol sniffing, call forwarding
//!   (`proxy`), upstream discovery (`upstream`), the reverse channel for
//!   calls in the other direction (`reverse`), the gRPC health service
//!   ([`gateway::health`]) and the Prometheus endpoint (`metrics`),
//!   graceful shutdown.
//! - [`client`]: an in-process ESI client (plain h2c, or this process as a
//!   client gateway over a redundant session); calls of any shape on bytes.
//! - [`fault`]: a TCP relay that kills, black-holes, corrupts, tampers
//!   with, delays, throttles, flaps and heals a path (a test aid, used by
//!   the Rust tests and the pytest plugin; message-path faults are the
//!   local NKN node's [`nkn::node::MessageFaults`]).
//! - [`cli`]: the `resi` command.
//! - [`busy_poll`]: `resi gateway` polls instead of sleeping while calls
//!   pass through it (`[Resi] BusyPoll`).
//! - [`logs`]: its log records: the gateway's name on each, text or JSON,
//!   repeated warnings rate-limited.
//! - `fuzzing` (hidden): the fuzz harnesses, one per decoder of network
//!   or file input, shared by `fuzz/` and the corpus replay test.
//! - `py` (feature `python`): the thin PyO3 bindings (type and error
//!   conversion only; the Python package is `python/resi`).

pub mod busy_poll;
pub mod cli;
pub mod client;
pub mod config;
pub mod cookie;
pub mod extension;
pub mod fault;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod grpc;
pub mod logs;
pub mod nkn;
pub mod path;
pub mod proto;
pub mod session;
pub mod tls;

#[cfg(feature = "python")]
mod py;

/// The Python extension (and so the `resi` command) allocates with
/// mimalloc: a gateway's per-call buffers are freed and reused at once, and
/// glibc's malloc spent a tenth of a busy gateway's time in its free lists
/// and in giving pages back to the kernel only to fault them in again.
#[cfg(feature = "python")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
