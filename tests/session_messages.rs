//! The session over message transports (as NKN is): every message may be
//! lost, duplicated, delayed or reordered, and the byte stream still comes
//! through exactly once, in order, in each mode — alone or beside a TCP
//! path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use resi::cookie::{new_session_id, CookieJar};
use resi::session::driver::{spawn, MessagePath, Role, StreamPath};
use resi::session::{Mode, SessionConfig, SessionHandle, SessionStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

fn cfg(mode: Mode) -> SessionConfig {
    SessionConfig {
        mode,
        heartbeat_interval: Duration::from_millis(50),
        dead_timeout: Duration::from_secs(2),
        send_window: 1 << 20,
        ..SessionConfig::default()
    }
}

fn ends(mode: Mode) -> ((SessionStream, SessionHandle), (SessionStream, SessionHandle)) {
    let jar = Arc::new(Mutex::new(CookieJar::default()));
    let a = spawn(cfg(mode), Role::Dialer { cookies: vec![], ttl: Duration::from_secs(60) }, new_session_id());
    let b = spawn(cfg(mode), Role::Acceptor { jar, cookie_ttl: Duration::from_secs(60) }, new_session_id());
    (a, b)
}

/// One direction of a lossy message link.
fn lossy(mut from: mpsc::Receiver<Bytes>, to: mpsc::Sender<Bytes>, loss: f64, seed: u64) {
    tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        while let Some(msg) = from.recv().await {
            if rng.random_bool(loss) {
                continue;
            }
            let copies = if rng.random_bool(0.05) { 2 } else { 1 };
            for _ in 0..copies {
                let delay = Duration::from_micros(rng.random_range(0..20_000));
                let to = to.clone();
                let msg = msg.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = to.send(msg).await;
                });
            }
        }
    });
}

fn message_path(a: &SessionHandle, b: &SessionHandle, id: u32, loss: f64, seed: u64) {
    let (a_out, a_out_rx) = mpsc::channel(64);
    let (b_in_tx, b_in) = mpsc::channel(64);
    let (b_out, b_out_rx) = mpsc::channel(64);
    let (a_in_tx, a_in) = mpsc::channel(64);
    lossy(a_out_rx, b_in_tx, loss, seed);
    lossy(b_out_rx, a_in_tx, loss, seed + 1);
    a.add_path(id, MessagePath { tx: a_out, rx: a_in, mtu: 256 * 1024 }, None);
    b.add_path(id, MessagePath { tx: b_out, rx: b_in, mtu: 256 * 1024 }, None);
}

fn stream_path(a: &SessionHandle, b: &SessionHandle, id: u32) {
    let (x, y) = tokio::io::duplex(256 * 1024);
    a.add_path(id, StreamPath { io: Box::new(x), read_buf: Default::default(), reliable: true }, None);
    b.add_path(id, StreamPath { io: Box::new(y), read_buf: Default::default(), reliable: true }, None);
}

async fn transfer(a: SessionStream, b: SessionStream, n: usize) {
    let payload: Vec<u8> = {
        let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
        (0..n).map(|_| rng.random()).collect()
    };
    let (_ra, mut wa) = tokio::io::split(a);
    let (mut rb, _wb) = tokio::io::split(b);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(16 * 1024) {
            wa.write_all(chunk).await.unwrap();
        }
        wa
    });
    let mut got = vec![0u8; n];
    rb.read_exact(&mut got).await.unwrap();
    assert!(got == payload, "stream differs");
    let _ = writer.await.unwrap();
}

#[tokio::test]
async fn a_lossy_message_path_alone_delivers_exactly_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let ((sa, ha), (sb, hb)) = ends(mode);
            message_path(&ha, &hb, 0, 0.15, 1);
            if tokio::time::timeout(Duration::from_secs(20), transfer(sa, sb, 2 << 20)).await.is_err() {
                panic!("{mode:?} stalled:\n{:#?}\n{:#?}", ha.stats().await, hb.stats().await);
            }
            let stats = ha.stats().await.unwrap();
            assert!(stats.paths[0].stats.retransmitted_bytes > 0, "loss caused no retransmission?");
        }
    })
    .await
    .expect("timed out")
}

#[tokio::test]
async fn tcp_and_a_lossy_message_path_make_one_session() {
    tokio::time::timeout(Duration::from_secs(60), async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let ((sa, ha), (sb, hb)) = ends(mode);
            stream_path(&ha, &hb, 0);
            message_path(&ha, &hb, 1, 0.1, 7);
            transfer(sa, sb, 3 << 20).await;
            let stats = hb.stats().await.unwrap();
            assert!(stats.paths.iter().all(|p| p.live), "{stats:?}");
        }
    })
    .await
    .expect("timed out")
}
