//! Transports that carry path frames.

pub mod tcp;
