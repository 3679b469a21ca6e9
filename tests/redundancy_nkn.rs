//! The gateway pair over TCP + NKN: the end gateway and the client gateway
//! each join resi's embedded local NKN node with their own identity, and
//! the session runs over one TCP path and one NKN path (relayed, end-to-end
//! encrypted, lossy). Calls survive the TCP path dying, and NKN message loss
//! injected at the node loses no call.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::echo::*;
use common::faultproxy::FaultProxy;
use resi::config::{Config, NknConfig, ResiConfig, TcpConfig};
use resi::gateway::{Gateway, UpstreamKind};
use resi::nkn::node::{LocalNode, NodeConfig};
use resi::nkn::Identity;
use resi::session::Mode;

fn resi_config(name: &str, mode: Mode) -> ResiConfig {
    ResiConfig {
        name: name.into(),
        mode,
        heartbeat_interval: Duration::from_millis(100),
        // NKN paths are relayed and encrypted: give them more room than the
        // 1 s default so a loaded 2-core test machine does not look dead.
        dead_timeout: Duration::from_secs(2),
        redial_max_backoff: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(5),
        ..ResiConfig::default()
    }
}

fn seed_hex(i: u8) -> String {
    hex::encode([i; 32])
}

struct Setup {
    _server: TestServer,
    _end: Gateway,
    client: Gateway,
    tcp: FaultProxy,
    node: Option<LocalNode>,
}

async fn setup(mode: Mode, loss: f64) -> Setup {
    let node = LocalNode::start(NodeConfig { loss, loss_seed: Some(7), ..NodeConfig::default() }).await.unwrap();
    let rpc = vec![node.rpc_url()];
    let server = start_echo_esi(&[]).await;
    let end = Gateway::start(Config {
        tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![server.addr.to_string()] }),
        nkn: Some(NknConfig { seed: Some(seed_hex(1)), subclients: 2, rpc_servers: rpc.clone(), ..NknConfig::default() }),
        resi: resi_config("end", mode),
        ..Config::default()
    })
    .unwrap();
    let end_nkn = end.nkn_address().expect("end gateway joined NKN");
    assert_eq!(end_nkn, Identity::from_seed([1; 32]).public_key_hex());
    let tcp = FaultProxy::start(end.local_addrs()[0]).await;
    let client = Gateway::start(Config {
        tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![tcp.addr().to_string()] }),
        nkn: Some(NknConfig { address: Some(end_nkn), seed: Some(seed_hex(2)), subclients: 2, rpc_servers: rpc, ..NknConfig::default() }),
        resi: resi_config("client", mode),
        ..Config::default()
    })
    .unwrap();
    let s = Setup { _server: server, _end: end, client, tcp, node: Some(node) };
    wait_live(&s.client, 2).await;
    s
}

async fn wait_live(gw: &Gateway, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = gw.upstream_session() {
            if let Some(stats) = s.stats().await {
                if stats.paths.iter().filter(|p| p.live).count() >= n {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "fewer than {n} live paths");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn msg(body: &[u8]) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count: 0, note: String::new() }
}

async fn shapes(addr: SocketAddr) {
    let mut c = echo_client(addr).await;
    assert_eq!(c.unary(msg(b"over tcp+nkn")).await.unwrap().into_inner().body.as_ref(), b"over tcp+nkn");
    let parts: Vec<Msg> = (0..20u8).map(|i| msg(&[i; 3000])).collect();
    let rsp = c.client_stream(tokio_stream::iter(parts)).await.unwrap().into_inner();
    assert_eq!(rsp.count, 20);
    let mut s = c.server_stream(Msg { body: Bytes::from_static(b"t"), count: 10, note: String::new() }).await.unwrap().into_inner();
    let mut n = 0;
    while s.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    let out: Vec<Msg> = (0..10u8).map(|i| msg(&[i; 10])).collect();
    let mut s = c.bidi(tokio_stream::iter(out)).await.unwrap().into_inner();
    let mut n = 0;
    while s.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    let big = pattern(512 << 10, 9);
    assert!(c.unary(Msg { body: big.clone(), count: 0, note: String::new() }).await.unwrap().into_inner().body == big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_nkn_make_one_session_in_each_mode() {
    tokio::time::timeout(Duration::from_secs(90), async {
        for mode in [Mode::Permissive, Mode::Strict] {
            let s = setup(mode, 0.0).await;
            assert!(matches!(s.client.upstream_kind(), Some(UpstreamKind::Resi { paths: 2, .. })));
            shapes(s.client.local_addrs()[0]).await;
            let stats = s.client.upstream_session().unwrap().stats().await.unwrap();
            assert!(stats.paths[1].stats.data_bytes_sent > 0, "NKN path carried nothing: {stats:?}");
        }
    })
    .await
    .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_killed_mid_load_loses_no_call_with_nkn_message_loss() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let s = setup(Mode::Permissive, 0.1).await;
        let c = echo_client(s.client.local_addrs()[0]).await;
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for t in 0..8u32 {
            let mut c = c.clone();
            let done = done.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10u32 {
                    let body = pattern(1000 + (t * 10 + i) as usize * 50, (t * 10 + i) as u8);
                    let rsp = c.unary(Msg { body: body.clone(), count: i, note: String::new() }).await;
                    assert!(rsp.expect("call failed").into_inner().body == body, "task {t} call {i}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Mid-load: once a quarter of the 80 calls are done.
        while done.load(Ordering::Relaxed) < 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        s.tcp.kill();
        for t in tasks {
            t.await.unwrap();
        }
        // The reset is seen by the session's driver, not necessarily before
        // the last call came back.
        let session = s.client.upstream_session().unwrap();
        let mut stats = session.stats().await.unwrap();
        for _ in 0..500 {
            if !stats.paths[0].live {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            stats = session.stats().await.unwrap();
        }
        assert!(!stats.paths[0].live, "{stats:?}");
        assert!(stats.paths[1].live, "{stats:?}");
    })
    .await
    .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readmitted_tcp_path_carries_the_session_when_nkn_goes() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut s = setup(Mode::Strict, 0.0).await;
        let mut c = echo_client(s.client.local_addrs()[0]).await;
        s.tcp.kill();
        c.unary(msg(b"over nkn")).await.unwrap();
        s.tcp.heal();
        wait_live(&s.client, 2).await;
        // The NKN node goes away: only the re-admitted TCP path is left.
        s.node.take().unwrap().shutdown().await;
        for i in 0..5u8 {
            let rsp = c.unary(msg(&[i; 100])).await.unwrap();
            assert_eq!(rsp.into_inner().body.as_ref(), &[i; 100]);
        }
        let stats = s.client.upstream_session().unwrap().stats().await.unwrap();
        assert!(stats.paths[0].live && stats.paths[0].stats.admissions >= 2, "{stats:?}");
    })
    .await
    .expect("timed out")
}

/// NKN alone: the session is opened in the NKN path's HELLO; the end
/// gateway listens on nothing but NKN.
async fn nkn_only(mode: Mode, loss: f64) -> (TestServer, Gateway, Gateway, LocalNode) {
    let node = LocalNode::start(NodeConfig { loss, loss_seed: Some(11), ..NodeConfig::default() }).await.unwrap();
    let rpc = vec![node.rpc_url()];
    let server = start_echo_esi(&[]).await;
    let end = Gateway::start(Config {
        tcp: Some(TcpConfig { listen: vec![], address: vec![server.addr.to_string()] }),
        nkn: Some(NknConfig { seed: Some(seed_hex(3)), subclients: 2, rpc_servers: rpc.clone(), ..NknConfig::default() }),
        resi: resi_config("end", mode),
        ..Config::default()
    })
    .unwrap();
    let client = Gateway::start(Config {
        tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![] }),
        nkn: Some(NknConfig { address: end.nkn_address(), seed: Some(seed_hex(4)), subclients: 2, rpc_servers: rpc, ..NknConfig::default() }),
        resi: resi_config("client", mode),
        ..Config::default()
    })
    .unwrap();
    wait_live(&client, 1).await;
    (server, end, client, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkn_alone_carries_every_shape_in_each_mode() {
    tokio::time::timeout(Duration::from_secs(90), async {
        for mode in [Mode::Strict, Mode::Permissive] {
            let (_server, _end, client, _node) = nkn_only(mode, 0.0).await;
            assert!(matches!(client.upstream_kind(), Some(UpstreamKind::Resi { paths: 1, .. })));
            shapes(client.local_addrs()[0]).await;
        }
    })
    .await
    .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkn_alone_loses_no_call_under_message_loss() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (_server, _end, client, node) = nkn_only(Mode::Strict, 0.15).await;
        let mut c = echo_client(client.local_addrs()[0]).await;
        for i in 0..40u32 {
            let body = pattern(500 + i as usize * 200, i as u8);
            let rsp = c.unary(Msg { body: body.clone(), count: i, note: String::new() }).await.unwrap();
            assert!(rsp.into_inner().body == body, "call {i}");
        }
        assert!(node.stats().dropped_loss > 0, "the loss knob dropped nothing");
    })
    .await
    .expect("timed out")
}

/// `[Nkn] AllowedPeers`: a gateway whose address is not on the end
/// gateway's list gets no answer (its HELLOs are counted and dropped); one
/// on the list opens a session and carries calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkn_allowed_peers_drop_hellos_from_other_addresses() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let node = LocalNode::start(NodeConfig::default()).await.unwrap();
        let rpc = vec![node.rpc_url()];
        let server = start_echo_esi(&[]).await;
        let friend_address = Identity::from_seed([6; 32]).public_key_hex();
        let nkn = |address: Option<String>, seed: u8, allowed_peers: Vec<String>| NknConfig {
            address,
            seed: Some(seed_hex(seed)),
            subclients: 2,
            rpc_servers: rpc.clone(),
            allowed_peers,
        };
        let end = Gateway::start(Config {
            tcp: Some(TcpConfig { listen: vec![], address: vec![server.addr.to_string()] }),
            nkn: Some(nkn(None, 5, vec![friend_address.to_uppercase()])),
            resi: resi_config("end", Mode::Strict),
            ..Config::default()
        })
        .unwrap();
        let client = |seed: u8| {
            Gateway::start(Config {
                tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![] }),
                nkn: Some(nkn(end.nkn_address(), seed, vec![])),
                resi: resi_config(&format!("client-{seed}"), Mode::Strict),
                ..Config::default()
            })
            .unwrap()
        };
        let stranger = client(7);
        let st = echo_client(stranger.local_addrs()[0]).await.unary(Msg::default()).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
        // The call can fail before the stranger's first HELLO has crossed
        // the local node (its NKN client still connecting); it keeps
        // redialling, so its HELLOs arrive and are counted soon after.
        let counted = async {
            while end.nkn_refused_hellos() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(10), counted).await.is_ok(), "the stranger's HELLO was not counted within 10 s");
        assert_eq!(end.sessions().session_count(), 0);
        drop(stranger);
        let friend = client(6);
        wait_live(&friend, 1).await;
        let body = pattern(1000, 6);
        let rsp = echo_client(friend.local_addrs()[0]).await.unary(Msg { body: body.clone(), count: 0, note: String::new() }).await;
        assert!(rsp.unwrap().into_inner().body == body);
        assert_eq!(end.sessions().session_count(), 1);
    })
    .await
    .expect("timed out")
}
