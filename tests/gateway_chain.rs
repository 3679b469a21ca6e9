//! Chains of gateways: client → client gateway → end gateway (→ …) → tonic
//! server. The client gateway discovers that its upstream speaks RESI and
//! carries calls over a redundant session.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::gateway::{Gateway, UpstreamKind};
use resi::session::Mode;
use tonic::Code;

use common::echo::*;
use common::faultproxy::FaultProxy;

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out");
}

fn config(name: &str, listen: &str, upstream: &[String], mode: Mode) -> Config {
    let resi = ResiConfig {
        name: name.into(),
        mode,
        connect_timeout: Duration::from_secs(2),
        heartbeat_interval: Duration::from_millis(100),
        dead_timeout: Duration::from_millis(500),
        redial_max_backoff: Duration::from_millis(300),
        resume_timeout: Duration::from_secs(3),
        shutdown_grace: Duration::from_millis(500),
        ..ResiConfig::default()
    };
    Config {
        source: None,
        tcp: Some(TcpConfig { listen: vec![listen.into()], address: upstream.to_vec() }),
        nkn: None,
        resi,
        reverse: None,
        tls: None,
        metrics: None,
    }
}

fn gw(name: &str, upstream: &[String], mode: Mode) -> Gateway {
    Gateway::start(config(name, "127.0.0.1:0", upstream, mode)).expect("gateway starts")
}

fn addr_of(g: &Gateway) -> String {
    g.local_addrs()[0].to_string()
}

fn msg(body: &[u8], count: u32, note: &str) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count, note: note.into() }
}

/// Waits until `g` reports a RESI upstream with a live session.
async fn wait_resi(g: &Gateway) {
    let t = Instant::now();
    loop {
        if let Some(UpstreamKind::Resi { .. }) = g.upstream_kind() {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no RESI upstream: {:?}", g.upstream_kind());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unary, streams, trailers and Modify through `entry`.
async fn exercise(entry: SocketAddr, up: &TestServer, first_hop: &str) {
    let mut c = echo_client(entry).await;
    let rsp = c.unary(msg(b"through", 3, "")).await.unwrap().into_inner();
    assert_eq!(rsp.body.as_ref(), b"through");

    let mut s = c.server_stream(msg(b"s", 5, "error")).await.unwrap().into_inner();
    for _ in 0..5 {
        s.message().await.unwrap().unwrap();
    }
    let st = s.message().await.unwrap_err();
    assert_eq!((st.code(), st.message()), (Code::Aborted, ERROR_MESSAGE));
    assert_eq!(st.details(), b"s");
    assert_eq!(st.metadata().get("x-trailer").unwrap(), "yes");

    let msgs: Vec<Msg> = (0..10u32).map(|i| msg(&pattern(1000, i as u8), i, "")).collect();
    let rsp = c.client_stream(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    assert_eq!(rsp.count, 10);

    let mut e = esi_client(entry).await;
    let ext = e.modify(modify_req(2, true, b"")).await.unwrap().into_inner().ext.unwrap();
    let info = resi::proto::resi::HopInfo::decode(ext.data).unwrap();
    assert_eq!(info.name, first_hop, "hop info comes from the first hop");

    let before = up.counters.modify_calls.load(Ordering::SeqCst);
    let ext = e.modify(modify_req(77, true, b"far")).await.unwrap().into_inner().ext.unwrap();
    assert_eq!(ext.data.as_ref(), [ESI_MARKER, b"far"].concat().as_slice());
    assert_eq!(up.counters.modify_calls.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn two_gateways_carry_calls_over_a_session() {
    bounded(async {
        let up = start_echo_esi(&[77]).await;
        let end = gw("end", &[up.addr.to_string()], Mode::Strict);
        let client = gw("client", &[addr_of(&end), addr_of(&end)], Mode::Strict);
        exercise(client.local_addrs()[0], &up, "client").await;
        wait_resi(&client).await;
        assert!(matches!(end.upstream_kind(), Some(UpstreamKind::Plain { .. })));
        assert_eq!(end.sessions().session_count(), 1);

        // 16 MiB each way over both paths.
        let mut c = echo_client(client.local_addrs()[0]).await;
        let big = pattern(16 << 20, 9);
        let t = Instant::now();
        let rsp = c.unary(msg(&big, 0, "")).await.unwrap().into_inner();
        assert!(rsp.body == big);
        eprintln!("16 MiB through two gateways (strict, 2 paths): {:?}", t.elapsed());

        client.shutdown().await;
        end.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn three_gateways_in_a_row() {
    bounded(async {
        let up = start_echo_esi(&[77]).await;
        let g3 = gw("g3", &[up.addr.to_string()], Mode::Permissive);
        let g2 = gw("g2", &[addr_of(&g3)], Mode::Permissive);
        let g1 = gw("g1", &[addr_of(&g2)], Mode::Permissive);
        exercise(g1.local_addrs()[0], &up, "g1").await;
        wait_resi(&g1).await;
        wait_resi(&g2).await;
        // 64 concurrent calls through the whole chain.
        let c = echo_client(g1.local_addrs()[0]).await;
        let calls = (0..64u32).map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move { c.unary(msg(&[i as u8; 100], i, "slow:20")).await.unwrap().into_inner().count })
        });
        let counts: Vec<u32> = futures_util::future::join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(counts, (0..64).collect::<Vec<_>>());
        g1.shutdown().await;
        g2.shutdown().await;
        g3.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_path_dies_mid_call_and_calls_go_on() {
    bounded(async {
        for mode in [Mode::Permissive, Mode::Strict] {
            let up = start_echo().await;
            let end = gw("end", &[up.addr.to_string()], mode);
            let end_addr: SocketAddr = addr_of(&end).parse().unwrap();
            let p1 = FaultProxy::start(end_addr).await;
            let p2 = FaultProxy::start(end_addr).await;
            let client = gw("client", &[p1.addr().to_string(), p2.addr().to_string()], mode);
            let mut c = echo_client(client.local_addrs()[0]).await;
            c.unary(msg(b"warm", 0, "")).await.unwrap();
            wait_resi(&client).await;

            // A stream in flight while the first path is killed.
            let mut s = c.server_stream(msg(b"tick", 20, "slow:50")).await.unwrap().into_inner();
            let mut got = 0;
            while let Some(m) = s.message().await.unwrap() {
                assert_eq!(m.count, got);
                got += 1;
                if got == 5 {
                    p1.kill();
                }
            }
            assert_eq!(got, 20, "{mode:?}");
            let rsp = c.unary(msg(b"after", 0, "")).await.unwrap().into_inner();
            assert_eq!(rsp.body.as_ref(), b"after");
            client.shutdown().await;
            end.shutdown().await;
        }
    })
    .await;
}

#[tokio::test]
async fn end_gateway_restart_is_survived() {
    bounded(async {
        let up = start_echo().await;
        let end_addr = free_addr().await.to_string();
        let end = Gateway::start(config("end", &end_addr, &[up.addr.to_string()], Mode::Strict)).unwrap();
        let client = gw("client", std::slice::from_ref(&end_addr), Mode::Strict);
        let mut c = echo_client(client.local_addrs()[0]).await;
        c.unary(msg(b"one", 0, "")).await.unwrap();
        wait_resi(&client).await;

        // A call in flight when the end gateway goes away fails UNAVAILABLE.
        let mut c2 = c.clone();
        let hang = tokio::spawn(async move { c2.unary(msg(b"", 0, "hang")).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        end.shutdown().await;
        let st = hang.await.unwrap().unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        let st = c.unary(msg(b"two", 0, "")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");

        let end = Gateway::start(config("end", &end_addr, &[up.addr.to_string()], Mode::Strict)).unwrap();
        let t = Instant::now();
        loop {
            match c.unary(msg(b"three", 0, "")).await {
                Ok(_) => break,
                Err(st) => {
                    assert_eq!(st.code(), Code::Unavailable, "{st:?}");
                    assert!(t.elapsed() < Duration::from_secs(15), "no recovery: {st:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        client.shutdown().await;
        end.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn no_task_left_after_chain_shutdown() {
    bounded(async {
        let up = start_echo().await;
        let metrics = tokio::runtime::Handle::current().metrics();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let baseline = metrics.num_alive_tasks();
        let end = gw("end", &[up.addr.to_string()], Mode::Strict);
        let client = gw("client", &[addr_of(&end), addr_of(&end)], Mode::Strict);
        {
            let mut c = echo_client(client.local_addrs()[0]).await;
            c.unary(msg(b"x", 0, "")).await.unwrap();
            let mut s = c.server_stream(msg(b"x", 3, "")).await.unwrap().into_inner();
            while s.message().await.unwrap().is_some() {}
        }
        wait_resi(&client).await;
        client.shutdown().await;
        end.shutdown().await;
        common::assert_tasks_settle(baseline).await;
    })
    .await;
}
