//! TLS 1.3 through real sockets: a mutual-TLS end gateway and a client
//! gateway dialling it over two TLS paths carry every RPC shape; wrong or
//! missing client certificates, a wrong server name, and a merge lifted
//! from one TLS connection and replayed on another are refused; missing,
//! unreadable and bad files are configuration errors; a plaintext listener
//! beyond loopback is warned about.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use common::echo::*;
use common::pki::Pki;
use resi::config::{Config, ConfigError};
use resi::gateway::{Gateway, UpstreamKind};
use resi::grpc::Code as RCode;
use resi::path::tcp;
use resi::proto::{esi, resi as rp};
use resi::session::client::{modify_request, open_request, redundancy_answer};
use resi::session::SessionConfig;
use resi::tls::{merge_binding, ChannelBinding, TlsFiles, TlsSettings, UpstreamTls};

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out");
}

const TIMERS: &str = r#"[Resi]
HeartbeatInterval = "100ms"
DeadTimeout = "500ms"
RedialMaxBackoff = "300ms"
ConnectTimeout = "2s"
"#;

fn start(toml: String) -> Gateway {
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RESI_LOG").unwrap_or("warn".into())).with_test_writer().try_init();
    let cfg = Config::from_toml_str(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    Gateway::start(cfg).expect("gateway starts")
}

/// An end gateway in front of `upstream`: TLS listener that requires
/// client certificates from the test CA.
fn end_gateway(pki: &Pki, upstream: SocketAddr) -> Gateway {
    let p = |n| pki.path(n).display().to_string();
    start(format!(
        "[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = \"{upstream}\"\n\
         [Tls]\nCert = {:?}\nKey = {:?}\nClientCa = {:?}\n{TIMERS}",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    ))
}

/// A client gateway with a plain loopback listener dialling `paths` over
/// TLS, presenting `client` (`"client-a"`, ...) if given.
fn client_gateway(pki: &Pki, paths: &[String], client: Option<&str>, server_name: Option<&str>) -> Gateway {
    let p = |n: &str| pki.path(n).display().to_string();
    let mut tls = format!("[Tls]\nUpstreamCa = {:?}\n", p("ca.pem"));
    if let Some(c) = client {
        tls += &format!("Cert = {:?}\nKey = {:?}\nPlainListen = true\n", p(&format!("{c}.pem")), p(&format!("{c}.key")));
    }
    if let Some(name) = server_name {
        tls += &format!("ServerName = {name:?}\n");
    }
    start(format!("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = {paths:?}\n{tls}{TIMERS}"))
}

/// A tonic channel over TLS to `addr` (checked as `localhost`), with the
/// client certificate `client` signed by `ca`, if given.
async fn tls_channel(pki: &Pki, addr: SocketAddr, client: Option<(&str, &str)>) -> Result<Channel, String> {
    let read = |n: &str| std::fs::read(pki.path(n)).unwrap();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.pem"))).domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn msg(body: &[u8], count: u32) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count, note: String::new() }
}

/// One unary Echo over TLS: Ok(body) or why not (connect or call error).
async fn tls_unary(pki: &Pki, addr: SocketAddr, client: Option<(&str, &str)>) -> Result<Bytes, String> {
    let ch = tls_channel(pki, addr, client).await?;
    let mut c = EchoClient::new(ch);
    c.unary(msg(b"hello", 0)).await.map(|r| r.into_inner().body).map_err(|s| format!("{s:?}"))
}

/// Unary, client, server and bidirectional streaming on `c`.
async fn four_shapes(mut c: EchoClient<Channel>) {
    assert_eq!(c.unary(msg(b"unary", 0)).await.unwrap().into_inner().body.as_ref(), b"unary");
    let parts: Vec<Msg> = (0..20u8).map(|i| msg(&[i; 500], 0)).collect();
    assert_eq!(c.client_stream(tokio_stream::iter(parts)).await.unwrap().into_inner().count, 20);
    let replies: Vec<Msg> = c.server_stream(msg(b"tick", 7)).await.unwrap().into_inner().collect::<Result<_, _>>().await.unwrap();
    assert_eq!(replies.len(), 7);
    assert!(replies.iter().enumerate().all(|(i, m)| m.count == i as u32 && m.body.as_ref() == b"tick"));
    let out: Vec<Msg> = (0..15u32).map(|i| msg(format!("m{i}").as_bytes(), i)).collect();
    let back: Vec<Msg> = c.bidi(tokio_stream::iter(out)).await.unwrap().into_inner().collect::<Result<_, _>>().await.unwrap();
    assert_eq!(back.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), (0..15).map(|i| Bytes::from(format!("m{i}"))).collect::<Vec<_>>());
}

async fn wait_resi(g: &Gateway, paths: usize) {
    let t = Instant::now();
    loop {
        if let Some(s) = g.upstream_session() {
            if let Some(stats) = s.stats().await {
                if stats.paths.iter().filter(|p| p.live).count() >= paths {
                    return;
                }
            }
        }
        assert!(t.elapsed() < Duration::from_secs(15), "no session with {paths} live paths: {:?}", g.upstream_kind());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn mutual_tls_gateway_pair_carries_all_four_shapes() {
    bounded(async {
        let pki = Pki::new();
        let server = start_echo_esi(&[]).await;
        let end = end_gateway(&pki, server.addr);
        let e = end.local_addrs()[0].to_string();
        let client = client_gateway(&pki, &[e.clone(), e], Some("client-a"), None);
        four_shapes(echo_client(client.local_addrs()[0]).await).await;
        wait_resi(&client, 2).await;
        assert!(matches!(client.upstream_kind(), Some(UpstreamKind::Resi { paths: 2, .. })));
        assert_eq!(end.sessions().session_count(), 1);
        // An ESI client straight to the TLS listener (ALPN h2, mutual TLS).
        let ch = tls_channel(&pki, end.local_addrs()[0], Some(("client-b.pem", "client-b.key"))).await.unwrap();
        four_shapes(EchoClient::new(ch)).await;
    })
    .await
}

#[tokio::test]
async fn wrong_or_missing_client_certificate_is_refused() {
    bounded(async {
        let pki = Pki::new();
        let server = start_echo_esi(&[]).await;
        let end = end_gateway(&pki, server.addr);
        let addr = end.local_addrs()[0];
        assert_eq!(tls_unary(&pki, addr, Some(("client-a.pem", "client-a.key"))).await.unwrap().as_ref(), b"hello");
        let none = tls_unary(&pki, addr, None).await.unwrap_err();
        assert!(none.contains("received fatal alert: CertificateRequired"), "{none}");
        let rogue = tls_unary(&pki, addr, Some(("rogue.pem", "rogue.key"))).await.unwrap_err();
        assert!(rogue.contains("received fatal alert: UnknownCA"), "{rogue}");
        // Plain h2c to a TLS listener gets nowhere either.
        let plain = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_timeout(Duration::from_secs(2));
        let plain = match plain.connect().await {
            Ok(ch) => EchoClient::new(ch).unary(msg(b"x", 0)).await.map(|_| ()).map_err(|s| s.code()),
            Err(_) => Err(Code::Unavailable),
        };
        assert!(plain.is_err(), "h2c passed a TLS listener");
        // resi's own client without a certificate: refused at connect.
        let plain = resi::client::Client::plain(addr.to_string(), Duration::from_secs(2), Some(upstream_tls(&pki, None, None)));
        let st = plain.ready().await.unwrap_err();
        assert!(st.message.contains("TLS: received fatal alert: CertificateRequired"), "{st}");
        plain.close().await;
        // A client gateway without a client certificate never gets a session.
        let e = addr.to_string();
        let client = client_gateway(&pki, &[e.clone(), e], None, None);
        let st = echo_client(client.local_addrs()[0]).await.unary(msg(b"x", 0)).await.unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(client.upstream_kind().is_none());
        assert_eq!(end.sessions().session_count(), 0);
    })
    .await
}

fn upstream_tls(pki: &Pki, client: Option<&str>, server_name: Option<&str>) -> UpstreamTls {
    let files = TlsFiles {
        cert: client.map(|c| pki.path(&format!("{c}.pem"))),
        key: client.map(|c| pki.path(&format!("{c}.key"))),
        upstream_ca: Some(pki.path("ca.pem")),
        server_name: server_name.map(String::from),
        ..TlsFiles::default()
    };
    TlsSettings::load(files).unwrap().upstream.unwrap()
}

#[tokio::test]
async fn wrong_server_name_is_refused() {
    bounded(async {
        let pki = Pki::new();
        let server = start_echo_esi(&[]).await;
        let end = end_gateway(&pki, server.addr);
        let addr = end.local_addrs()[0].to_string();
        let timeout = Duration::from_secs(2);
        for (name, ok) in [(None, true), (Some("localhost"), true), (Some("other.example"), false)] {
            let client = resi::client::Client::plain(addr.clone(), timeout, Some(upstream_tls(&pki, Some("client-a"), name)));
            let ready = client.ready().await;
            assert_eq!(ready.is_ok(), ok, "server name {name:?}: {ready:?}");
            if let Err(st) = ready {
                assert!(st.message.contains("TLS handshake") && st.message.contains("certificate not valid for name \"other.example\""), "{st}");
            }
            client.close().await;
        }
        // A TLS path checks the name too.
        let tls = upstream_tls(&pki, Some("client-a"), Some("other.example"));
        let err = tcp::dial_tls(&addr, &tls, |_| Bytes::new(), timeout).await.unwrap_err();
        assert!(matches!(err, tcp::PathError::Tls { .. }), "{err}");
    })
    .await
}

/// Opens a session at `gw` over mutual TLS with `client`'s certificate.
async fn open_session(pki: &Pki, gw: SocketAddr, client: &str) -> rp::OpenResponse {
    let ch = tls_channel(pki, gw, Some((&format!("{client}.pem"), &format!("{client}.key")))).await.unwrap();
    let req = modify_request(rp::redundancy::Msg::Open(open_request(&SessionConfig::default(), 4)));
    let req = ModifyRequest { ext: req.ext.map(|e| Extension { id: e.id, pass: e.pass, data: e.data }) };
    let rsp = EsiClient::new(ch).modify(req).await.unwrap().into_inner();
    let rsp = esi::ModifyResponse { ext: rsp.ext.map(|e| esi::Extension { id: e.id, pass: e.pass, data: e.data }) };
    match redundancy_answer(&rsp).unwrap() {
        rp::redundancy::Msg::Opened(o) => o,
        other => panic!("not opened: {other:?}"),
    }
}

fn merge_hello(cookie: &Bytes, binding: Vec<u8>) -> Bytes {
    let merge = rp::MergeRequest { cookie: cookie.clone(), path_id: 0, binding: binding.into() };
    modify_request(rp::redundancy::Msg::Merge(merge)).encode_to_vec().into()
}

/// The status a HELLO_REPLY carries (Ok for a merge).
fn reply_status(reply: Bytes) -> Result<(), (RCode, String)> {
    match rp::HelloReply::decode(reply).unwrap().result.unwrap() {
        rp::hello_reply::Result::Response(_) => Ok(()),
        rp::hello_reply::Result::Error(s) => Err((RCode::from_i32(s.code), s.message)),
    }
}

/// Dials a TLS path to `gw` presenting `client` and sends what `hello`
/// builds from that connection's binding; the reply's status.
async fn tls_merge(
    gw: &str,
    tls: &UpstreamTls,
    hello: impl FnOnce(&ChannelBinding) -> Bytes,
) -> Result<(), (RCode, String)> {
    let (_stream, _, reply) = tcp::dial_tls(gw, tls, hello, Duration::from_secs(5)).await.unwrap();
    reply_status(reply)
}

#[tokio::test]
async fn a_merge_lifted_from_one_tls_connection_does_not_merge_another() {
    bounded(async {
        let pki = Pki::new();
        let server = start_echo_esi(&[]).await;
        let end = end_gateway(&pki, server.addr);
        let gw = end.local_addrs()[0];
        let addr = gw.to_string();
        let opened = open_session(&pki, gw, "client-a").await;
        let [c0, c1, c2, c3] = <[Bytes; 4]>::try_from(opened.cookies).unwrap();
        let tls_a = upstream_tls(&pki, Some("client-a"), None);

        // A merge bound to its own connection joins.
        let bound = |cookie: Bytes| move |ch: &ChannelBinding| merge_hello(&cookie, merge_binding(&cookie, &ch.exporter.unwrap()).to_vec());
        tls_merge(&addr, &tls_a, bound(c0)).await.expect("a bound merge joins");

        // Lift the HELLO bound to connection 1 (which sends something else,
        // so the cookie stays unspent) and replay it on connection 2.
        let lifted = Arc::new(Mutex::new(None));
        let keep = lifted.clone();
        let c1_ = c1.clone();
        let decoy = tls_merge(&addr, &tls_a, move |ch: &ChannelBinding| {
            *keep.lock().unwrap() = Some(bound(c1_)(ch));
            bound(Bytes::from_static(b"not a cookie"))(ch)
        })
        .await;
        assert_eq!(decoy.unwrap_err().0, RCode::Unauthenticated);
        let replay = lifted.lock().unwrap().take().unwrap();
        let (code, message) = tls_merge(&addr, &tls_a, move |_| replay).await.unwrap_err();
        assert_eq!((code, message.as_str()), (RCode::PermissionDenied, "merge not bound to this TLS connection"));
        // Without any binding: refused the same way.
        let (code, _) = tls_merge(&addr, &tls_a, |_| merge_hello(&c2, vec![])).await.unwrap_err();
        assert_eq!(code, RCode::PermissionDenied);
        // The refusals did not spend the cookie: bound properly, it joins.
        tls_merge(&addr, &tls_a, bound(c1)).await.expect("the cookie survives a refused replay");

        // Another valid client certificate cannot join A's session.
        let tls_b = upstream_tls(&pki, Some("client-b"), None);
        let (code, message) = tls_merge(&addr, &tls_b, bound(c3)).await.unwrap_err();
        assert_eq!(code, RCode::PermissionDenied);
        assert!(message.contains("another client certificate"), "{message}");
        assert_eq!(end.sessions().session_count(), 1);
    })
    .await
}

fn load(dir: &std::path::Path, tls: &str) -> Result<Config, ConfigError> {
    let path = dir.join("gw.toml");
    std::fs::write(&path, format!("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = \"127.0.0.1:9\"\n[Tls]\n{tls}")).unwrap();
    Config::from_file(&path)
}

fn load_err(dir: &std::path::Path, tls: &str) -> String {
    match load(dir, tls) {
        Ok(_) => panic!("accepted: {tls}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_unreadable_and_bad_files_are_config_errors() {
    let pki = Pki::new();
    let dir = pki.root();
    let gw = dir.join("gw.toml").display().to_string();
    let missing = dir.join("x.pem").display().to_string();
    // Relative names are relative to the file's folder.
    assert!(load(dir, "Cert = \"server.pem\"\nKey = \"server.key\"\nClientCa = \"ca.pem\"").unwrap().tls.unwrap().listener.is_some());
    let e = load_err(dir, "Cert = \"x.pem\"\nKey = \"server.key\"");
    assert!(e.starts_with(&format!("{gw}: [Tls] Cert: cannot read {missing:?}: No such file or directory")), "{e}");
    std::fs::create_dir(dir.join("folder.pem")).unwrap();
    let e = load_err(dir, "Cert = \"server.pem\"\nKey = \"folder.pem\"");
    assert!(e.starts_with(&format!("{gw}: [Tls] Key: cannot read")) && e.contains("directory"), "{e}");
    let e = load_err(dir, "UpstreamCa = \"gw.toml\"");
    assert!(e.starts_with(&format!("{gw}: [Tls] UpstreamCa: ")) && e.contains("holds no CERTIFICATE"), "{e}");
    let e = load_err(dir, "Cert = \"server.pem\"\nKey = \"client-a.key\"");
    assert!(e.contains("[Tls] Cert: the certificate and key do not go together"), "{e}");
    let e = load_err(dir, "Cert = \"server.pem\"\nKey = \"client-a.key\"\nPlainListen = true\nUpstreamCa = \"ca.pem\"");
    assert!(e.contains("[Tls] Cert: the certificate and key do not go together"), "{e}");
    let e = load_err(dir, "Cert = \"server.pem\"");
    assert!(e.contains("[Tls] Key: missing"), "{e}");
    let e = load_err(dir, "ClientCa = \"ca.pem\"");
    assert!(e.contains("[Tls] ClientCa: needs [Tls] Cert and Key"), "{e}");
    let e = load_err(dir, "Cert = \"server.pem\"\nKey = \"server.key\"\nClientCa = \"ca.pem\"\nPlainListen = true");
    assert!(e.contains("[Tls] ClientCa: needs a TLS listener"), "{e}");
    let e = load_err(dir, "PlainListen = \"yes\"");
    assert!(e.contains("[Tls] PlainListen: expected true or false"), "{e}");
    let e = load_err(dir, "ServerName = \"localhost\"");
    assert!(e.contains("[Tls] ServerName: needs [Tls] UpstreamCa"), "{e}");
    let e = load_err(dir, "UpstreamCa = \"ca.pem\"\nServerName = \"bad name!\"");
    assert!(e.contains("[Tls] ServerName: \"bad name!\" is not a DNS name"), "{e}");
    let e = load_err(dir, "Crt = \"ca.pem\"");
    assert!(e.contains("[Tls] Crt: unknown key (did you mean Cert?)"), "{e}");
}

#[test]
fn plaintext_listener_beyond_loopback_warns() {
    let pki = Pki::new();
    let cfg = |listen: &str, tls: bool| {
        let tls = if tls {
            format!("[Tls]\nCert = {:?}\nKey = {:?}\n", pki.path("server.pem"), pki.path("server.key"))
        } else {
            String::new()
        };
        Config::from_toml_str(&format!("[Tcp]\nListen = {listen}\nAddress = \"127.0.0.1:9\"\n{tls}"), "gw.toml").unwrap()
    };
    for quiet in ["\"127.0.0.1:0\"", "\"localhost:4001\"", "\"[::1]:4001\"", "[\"127.0.0.2:1\", \"LOCALHOST:2\"]"] {
        assert_eq!(cfg(quiet, false).warnings(), Vec::<String>::new(), "{quiet}");
    }
    let w = cfg("[\"127.0.0.1:1\", \"0.0.0.0:4001\", \"gw.example:4001\"]", false).warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("[Tcp] Listen \"0.0.0.0:4001\" is reachable beyond loopback without TLS ([Tls] Cert): "), "{w:?}");
    assert!(w[1].contains("gw.example:4001"), "{w:?}");
    assert!(cfg("\"0.0.0.0:4001\"", true).warnings().is_empty());
}
