//! Shared helpers for the Rust integration tests.
#![allow(dead_code)]

pub mod echo;
pub mod faultproxy;

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

/// Waits (at most 10 s) until the session `gw` dialled upstream has `n`
/// live paths.
pub async fn wait_live(gw: &resi::gateway::Gateway, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(s) = gw.upstream_session() {
            if let Some(stats) = s.stats().await {
                if stats.paths.iter().filter(|p| p.live).count() >= n {
                    return;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "fewer than {n} live paths");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
