//! Shared helpers for the Rust integration tests.
#![allow(dead_code)]

pub mod echo;
pub mod faultproxy;
