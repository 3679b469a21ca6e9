//! Shared helpers for the Rust integration tests.
#![allow(dead_code)]

pub mod echo;
pub mod faultproxy;
pub mod pki;

/// Waits (at most 5 s) until no more tokio tasks are alive than
/// `baseline`; fails naming the count otherwise.
pub async fn assert_tasks_settle(baseline: usize) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let start = std::time::Instant::now();
    while metrics.num_alive_tasks() > baseline {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{} tasks alive after shutdown, {baseline} before start",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
