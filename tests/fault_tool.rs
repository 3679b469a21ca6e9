//! The fault relay from Rust tests: each shaping fault and the flap
//! schedule, measured on the wire through an echo server on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use resi::fault::{Fault, FaultRelay, Flap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

const WAIT: Duration = Duration::from_secs(10);

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `data` and reads it back; how long that took.
async fn echo(s: &mut TcpStream, data: &[u8]) -> Duration {
    let start = Instant::now();
    s.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    timeout(WAIT * 2, s.read_exact(&mut back)).await.expect("echo within the wait").unwrap();
    assert_eq!(back, data);
    start.elapsed()
}

#[tokio::test]
async fn delay_holds_each_direction_and_heal_ends_it() {
    let relay = FaultRelay::start(echo_server().await).await;
    let mut s = TcpStream::connect(relay.addr()).await.unwrap();
    assert!(echo(&mut s, b"warm").await < Duration::from_secs(1));
    relay.delay(Duration::from_millis(100), Duration::from_millis(50));
    let took = echo(&mut s, b"slow").await;
    assert!(took >= Duration::from_millis(195), "{took:?}");
    relay.heal();
    assert_eq!(relay.shape(), Default::default());
    assert!(echo(&mut s, b"fast").await < Duration::from_millis(150));
}

#[tokio::test]
async fn bandwidth_paces_the_bytes() {
    let relay = FaultRelay::start(echo_server().await).await;
    let mut s = TcpStream::connect(relay.addr()).await.unwrap();
    relay.bandwidth(Some(50_000));
    let took = echo(&mut s, &[7u8; 50_000]).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");
    relay.bandwidth(None);
    assert!(echo(&mut s, &[8u8; 50_000]).await < Duration::from_millis(500));
}

#[tokio::test]
async fn flap_goes_down_and_up_by_itself_then_stays_up() {
    let relay = FaultRelay::start(echo_server().await).await;
    relay.flap(Duration::from_millis(200), Duration::from_millis(300), Duration::from_millis(1200), Flap::Kill);
    assert!(relay.is_flapping());
    let deadline = Instant::now() + WAIT;
    let mut saw = (false, false);
    while relay.is_flapping() {
        match relay.fault() {
            Fault::Killed => {
                saw.0 = true;
                // Killed: a new connection is accepted and closed at once.
                if let Ok(mut s) = TcpStream::connect(relay.addr()).await {
                    let mut b = [0u8; 1];
                    // Closed at once (0), or reset; a connection made just as
                    // the path came back up stays open: no answer within 1 s.
                    let n = timeout(Duration::from_secs(1), s.read(&mut b)).await.ok().and_then(Result::ok);
                    assert!(matches!(n, Some(0) | None), "a killed relay relayed: {n:?}");
                }
            }
            Fault::Pass => saw.1 = true,
            other => panic!("unexpected fault while flapping: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the flap did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(saw, (true, true));
    assert_eq!(relay.fault(), Fault::Pass);
    let mut s = TcpStream::connect(relay.addr()).await.unwrap();
    assert!(echo(&mut s, b"after").await < Duration::from_secs(1));
}
