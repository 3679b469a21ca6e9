//! The fault relay now lives in the library (`resi::fault`); the tests keep
//! their old name for it.

#[allow(unused_imports)]
pub use resi::fault::{Fault, FaultRelay as FaultProxy};
