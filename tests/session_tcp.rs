//! The redundant session over real TCP paths on loopback, with faults
//! injected by relays: byte streams echo through the session exactly once
//! and in order while paths die, go silent and come back.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::faultproxy::FaultProxy;
use rand::{Rng, SeedableRng};
use resi::session::client::{connect_tcp, open_request};
use resi::session::registry::SessionRegistry;
use resi::session::{Mode, SessionConfig, SessionHandle, SessionStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn cfg(mode: Mode) -> SessionConfig {
    SessionConfig {
        mode,
        heartbeat_interval: Duration::from_millis(100),
        dead_timeout: Duration::from_millis(500),
        redial_max_backoff: Duration::from_millis(300),
        resume_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    }
}

struct Pair {
    client: SessionStream,
    handle: SessionHandle,
    server: SessionHandle,
    proxies: Vec<FaultProxy>,
    _registry: Arc<SessionRegistry>,
}

/// An end (echoing every byte back) reached over `paths` relayed TCP paths.
async fn pair(mode: Mode, paths: usize) -> Pair {
    let (registry, mut sessions) = SessionRegistry::new(cfg(mode));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let reg = registry.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            let reg = reg.clone();
            tokio::spawn(async move { reg.accept_tcp_path(stream, Duration::from_secs(5)).await });
        }
    });
    tokio::spawn(async move {
        while let Some(stream) = sessions.recv().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = tokio::io::split(stream);
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    let mut proxies = vec![];
    for _ in 0..paths {
        proxies.push(FaultProxy::start(target).await);
    }
    let opened = registry.open(&open_request(&cfg(mode), paths)).unwrap();
    let addrs = proxies.iter().map(|p| p.addr().to_string()).collect();
    let (client, handle) = connect_tcp(opened, addrs, cfg(mode)).await.unwrap();
    let server = registry.sessions().pop().unwrap();
    wait_live(&handle, paths).await;
    Pair { client, handle, server, proxies, _registry: registry }
}

async fn wait_live(handle: &SessionHandle, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = handle.stats().await.unwrap();
        if stats.paths.iter().filter(|p| p.live).count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {:?} live", stats.paths);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random()).collect()
}

/// Writes `payload` in chunks while reading the echo; `during` runs after
/// `at` bytes were echoed. Returns the echoed bytes.
async fn echo_through<F, Fut>(stream: SessionStream, payload: Vec<u8>, at: usize, during: F) -> Vec<u8>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let to_send = payload.clone();
    let writer = tokio::spawn(async move {
        for chunk in to_send.chunks(8 * 1024) {
            wr.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        wr
    });
    let mut got = vec![0u8; payload.len()];
    rd.read_exact(&mut got[..at]).await.unwrap();
    during().await;
    rd.read_exact(&mut got[at..]).await.unwrap();
    let _wr = writer.await.unwrap();
    got
}

async fn bounded<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f).await.expect("test timed out")
}

#[tokio::test]
async fn bytes_echo_exactly_once_over_two_paths_in_each_mode() {
    bounded(30, async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let p = pair(mode, 2).await;
            let payload = data(3 << 20, 1);
            let got = echo_through(p.client, payload.clone(), 0, || async {}).await;
            assert!(got == payload, "{mode:?}: echo differs");
            let stats = p.handle.stats().await.unwrap();
            assert_eq!(stats.mode, mode);
            for path in &stats.paths {
                assert!(path.stats.data_bytes_sent >= payload.len() as u64 / 2, "{path:?}");
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_killed_path_loses_nothing_and_is_readmitted() {
    bounded(30, async {
        for mode in [Mode::Permissive, Mode::Strict] {
            let p = pair(mode, 2).await;
            let payload = data(4 << 20, 2);
            let proxies = &p.proxies;
            let got = echo_through(p.client, payload.clone(), 1 << 20, || async {
                proxies[0].kill();
                tokio::time::sleep(Duration::from_millis(300)).await;
                proxies[0].heal();
            })
            .await;
            assert!(got == payload, "{mode:?}: echo differs");
            wait_live(&p.handle, 2).await;
            let stats = p.handle.stats().await.unwrap();
            assert!(stats.paths[0].stats.admissions >= 2, "path 0 not re-admitted: {stats:?}");
        }
    })
    .await
}

#[tokio::test]
async fn a_black_holed_path_stalls_strict_mode_no_longer_than_the_dead_timeout() {
    bounded(30, async {
        let p = pair(Mode::Strict, 2).await;
        let (mut rd, mut wr) = tokio::io::split(p.client);
        let mut buf = [0u8; 5];
        wr.write_all(b"hello").await.unwrap();
        rd.read_exact(&mut buf).await.unwrap();
        p.proxies[1].blackhole();
        let start = Instant::now();
        wr.write_all(b"world").await.unwrap();
        rd.read_exact(&mut buf).await.unwrap();
        let stalled = start.elapsed();
        assert_eq!(&buf, b"world");
        // dead timeout 500 ms; allow scheduling slack, not a second timeout
        assert!(stalled < Duration::from_millis(900), "stalled {stalled:?}");
        assert!(stalled >= Duration::from_millis(300), "strict did not wait for the silent path: {stalled:?}");
    })
    .await
}

#[tokio::test]
async fn a_readmitted_path_carries_the_session_when_the_other_dies() {
    bounded(30, async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let p = pair(mode, 2).await;
            let (mut rd, mut wr) = tokio::io::split(p.client);
            let mut buf = [0u8; 4];
            p.proxies[1].kill();
            tokio::time::sleep(Duration::from_millis(200)).await;
            wr.write_all(b"one!").await.unwrap();
            rd.read_exact(&mut buf).await.unwrap();
            p.proxies[1].heal();
            wait_live(&p.handle, 2).await;
            p.proxies[0].kill();
            wr.write_all(b"two!").await.unwrap();
            rd.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"two!");
            let stats = p.handle.stats().await.unwrap();
            assert!(!stats.paths[0].live && stats.paths[1].live, "{stats:?}");
        }
    })
    .await
}

#[tokio::test]
async fn an_outage_of_every_path_is_survived() {
    bounded(30, async {
        let p = pair(Mode::Strict, 2).await;
        let (mut rd, mut wr) = tokio::io::split(p.client);
        let mut buf = [0u8; 6];
        p.proxies[0].kill();
        p.proxies[1].kill();
        wr.write_all(b"during").await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.proxies[0].heal();
        p.proxies[1].heal();
        rd.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"during");
        assert!(!p.handle.is_closed() && !p.server.is_closed());
    })
    .await
}

#[tokio::test]
async fn closing_the_stream_ends_both_sides() {
    bounded(30, async {
        let p = pair(Mode::Permissive, 2).await;
        let (mut rd, mut wr) = tokio::io::split(p.client);
        wr.write_all(b"bye").await.unwrap();
        wr.shutdown().await.unwrap();
        let mut all = vec![];
        rd.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"bye");
        drop((rd, wr));
        bounded(5, p.handle.closed()).await;
        bounded(5, p.server.closed()).await;
    })
    .await
}
