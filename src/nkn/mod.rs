//! The NKN transport (nkn.org): see `shared/docs/nkn-client-protocol.md`.

pub mod node;
