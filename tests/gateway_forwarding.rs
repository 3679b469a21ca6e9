//! One gateway in front of a plain tonic upstream: forwarding of every RPC
//! shape, metadata and trailers, big messages, concurrency, failures,
//! shutdown, and `Modify` dispatch.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::extension::handler_fn;
use resi::gateway::{Gateway, UpstreamKind};
use resi::grpc::{Code as RCode, Status as RStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::metadata::MetadataValue;
use tonic::Code;

use common::echo::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs a test body with a time bound.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

fn config(upstream: &str) -> Config {
    let resi = ResiConfig { name: "gw-test".into(), connect_timeout: Duration::from_secs(1), ..ResiConfig::default() };
    Config {
        source: None,
        tcp: Some(TcpConfig { listen: vec!["127.0.0.1:0".into()], address: vec![upstream.to_string()] }),
        nkn: None,
        resi,
        reverse: None,
        tls: None,
        metrics: None,
    }
}

fn start_gw(upstream: std::net::SocketAddr) -> Gateway {
    Gateway::start(config(&upstream.to_string())).expect("gateway starts")
}

fn gw_addr(gw: &Gateway) -> std::net::SocketAddr {
    gw.local_addrs()[0]
}

fn msg(body: &[u8], count: u32, note: &str) -> Msg {
    Msg { body: Bytes::copy_from_slice(body), count, note: note.into() }
}

fn with_metadata<T>(m: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(m);
    req.metadata_mut().insert("x-ascii", MetadataValue::from_static("hello"));
    req.metadata_mut().insert_bin("x-blob-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
    req
}

fn assert_echoed_metadata(md: &tonic::metadata::MetadataMap) {
    assert_eq!(md.get("x-ascii").unwrap(), "hello");
    assert_eq!(md.get_bin("x-blob-bin").unwrap().to_bytes().unwrap().as_ref(), &[0, 1, 2, 255]);
}

#[tokio::test]
async fn unary_with_metadata() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let mut c = echo_client(gw_addr(&gw)).await;
        let rsp = c.unary(with_metadata(msg(b"ping", 7, "n"))).await.unwrap();
        assert_echoed_metadata(rsp.metadata());
        assert_eq!(rsp.get_ref(), &msg(b"ping", 7, "n"));
        assert_eq!(gw.upstream_kind(), Some(UpstreamKind::Plain { addr: up.addr.to_string() }));
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn client_stream_server_stream_bidi() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let mut c = echo_client(gw_addr(&gw)).await;

        let msgs: Vec<Msg> = (0..5u32).map(|i| msg(&[i as u8; 10], i, "")).collect();
        let rsp = c.client_stream(with_metadata(tokio_stream::iter(msgs.clone()))).await.unwrap();
        assert_echoed_metadata(rsp.metadata());
        let expect = msgs.iter().fold(FNV_START, |h, m| fnv(&m.body, h));
        assert_eq!(rsp.get_ref().count, 5);
        assert_eq!(rsp.get_ref().note, format!("50:{expect:x}"));

        let rsp = c.server_stream(with_metadata(msg(b"s", 6, ""))).await.unwrap();
        assert_echoed_metadata(rsp.metadata());
        let mut stream = rsp.into_inner();
        let mut got = Vec::new();
        while let Some(m) = stream.message().await.unwrap() {
            got.push(m.count);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4, 5]);

        // Bidi: interleaved, each request answered before the next is sent.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let rsp = c.bidi(with_metadata(tokio_stream::wrappers::ReceiverStream::new(rx))).await;
        tx.send(msg(b"first", 1, "")).await.unwrap();
        let rsp = rsp.unwrap();
        assert_echoed_metadata(rsp.metadata());
        let mut stream = rsp.into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().body.as_ref(), b"first");
        for i in 2..6u32 {
            tx.send(msg(format!("m{i}").as_bytes(), i, "")).await.unwrap();
            let m = stream.message().await.unwrap().unwrap();
            assert_eq!((m.count, m.body.as_ref()), (i, format!("m{i}").as_bytes()));
        }
        drop(tx);
        assert!(stream.message().await.unwrap().is_none());
        gw.shutdown().await;
    })
    .await;
}

fn assert_error_status(st: &tonic::Status, code: Code, details: &[u8]) {
    assert_eq!(st.code(), code, "{st:?}");
    assert_eq!(st.message(), ERROR_MESSAGE);
    assert_eq!(st.details(), details);
    assert_eq!(st.metadata().get("x-trailer").unwrap(), "yes");
    assert_eq!(st.metadata().get_bin("x-trailer-bin").unwrap().to_bytes().unwrap().as_ref(), &[1, 2, 3]);
}

#[tokio::test]
async fn error_status_details_and_trailers_pass_through() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let mut c = echo_client(gw_addr(&gw)).await;

        // Trailers-only error response.
        let st = c.unary(msg(b"\x08\x01details", Code::FailedPrecondition as u32, "error")).await.unwrap_err();
        assert_error_status(&st, Code::FailedPrecondition, b"\x08\x01details");

        // Real trailers after data frames.
        let mut stream = c.server_stream(msg(b"detail-bytes", 3, "error")).await.unwrap().into_inner();
        for _ in 0..3 {
            assert!(stream.message().await.unwrap().is_some());
        }
        let st = stream.message().await.unwrap_err();
        assert_error_status(&st, Code::Aborted, b"detail-bytes");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sixteen_mib_messages() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let mut c = echo_client(gw_addr(&gw)).await;
        let big = pattern(16 << 20, 7);

        let t = Instant::now();
        let rsp = c.unary(msg(&big, 0, "")).await.unwrap().into_inner();
        assert!(rsp.body == big, "16 MiB unary body corrupted");
        eprintln!("16 MiB unary round trip: {:?}", t.elapsed());

        // 16 MiB in one stream message and 16 × 1 MiB in a client stream.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut stream = c.bidi(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        tx.send(msg(&big, 1, "")).await.unwrap();
        assert!(stream.message().await.unwrap().unwrap().body == big);
        drop(tx);

        let chunks: Vec<Msg> = (0..16).map(|i| msg(&pattern(1 << 20, i), i as u32, "")).collect();
        let expect = chunks.iter().fold(FNV_START, |h, m| fnv(&m.body, h));
        let rsp = c.client_stream(tokio_stream::iter(chunks)).await.unwrap().into_inner();
        assert_eq!(rsp.note, format!("{}:{expect:x}", 16 << 20));
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn sixty_four_concurrent_calls() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let c = echo_client(gw_addr(&gw)).await;
        let calls = (0..64u32).map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                let body = format!("call-{i}");
                let rsp = c.unary(msg(body.as_bytes(), i, "slow:50")).await.unwrap().into_inner();
                assert_eq!((rsp.count, rsp.body.as_ref()), (i, body.as_bytes()));
            })
        });
        let t = Instant::now();
        for r in futures_util::future::join_all(calls).await {
            r.unwrap();
        }
        // All 64 ran at once, not one after the other.
        assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
        assert_eq!(up.counters.echo_calls.load(Ordering::SeqCst), 64);
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn upstream_down_is_unavailable_then_recovers() {
    bounded(async {
        let addr = free_addr().await;
        let gw = start_gw(addr);
        let mut c = echo_client(gw_addr(&gw)).await;

        let t = Instant::now();
        let st = c.unary(msg(b"x", 0, "")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(st.message().contains(&addr.to_string()), "message names the upstream: {st:?}");
        assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());

        // The upstream comes up: calls succeed again.
        let up = start_echo_at(addr).await;
        let mut ok = false;
        for _ in 0..50 {
            if c.unary(msg(b"x", 0, "")).await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "gateway did not recover once the upstream was up");

        // It goes away again, and comes back once more.
        up.stop().await;
        let st = c.unary(msg(b"x", 0, "")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        let _up = start_echo_at(addr).await;
        let t = Instant::now();
        while c.unary(msg(b"x", 0, "")).await.is_err() {
            assert!(t.elapsed() < Duration::from_secs(5), "no recovery after restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn garbage_and_half_open_connections_harm_no_one() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let addr = gw_addr(&gw);
        let mut c = echo_client(addr).await;
        c.unary(msg(b"before", 0, "")).await.unwrap();

        // An open call on the good connection while garbage arrives.
        let mut c2 = c.clone();
        let slow = tokio::spawn(async move { c2.unary(msg(b"slow", 0, "slow:500")).await });

        let mut garbage = TcpStream::connect(addr).await.unwrap();
        garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut noise = TcpStream::connect(addr).await.unwrap();
        noise.write_all(&pattern(100_000, 3)).await.unwrap_or(());
        let mut fake_resi = TcpStream::connect(addr).await.unwrap();
        fake_resi.write_all(b"RES").await.unwrap();
        let _half_open = TcpStream::connect(addr).await.unwrap(); // says nothing
        let bad_h2 = TcpStream::connect(addr).await.unwrap();
        {
            let mut bad_h2 = bad_h2;
            bad_h2
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x09\x00\x00\x00\x00\x00garbage")
                .await
                .unwrap();
        }

        c.unary(msg(b"during", 0, "")).await.unwrap();
        assert!(slow.await.unwrap().is_ok());
        let mut fresh = echo_client(addr).await;
        fresh.unary(msg(b"after", 0, "")).await.unwrap();
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_calls() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let addr = gw_addr(&gw);
        let mut c = echo_client(addr).await;
        c.unary(msg(b"warm", 0, "")).await.unwrap();

        let mut c2 = c.clone();
        let slow = tokio::spawn(async move { c2.unary(msg(b"slow", 0, "slow:800")).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        gw.shutdown().await;
        let done = t.elapsed();
        let rsp = slow.await.unwrap().expect("in-flight call finished");
        assert_eq!(rsp.get_ref().body.as_ref(), b"slow");
        assert!(done >= Duration::from_millis(400), "shutdown waited for the call ({done:?})");
        assert!(TcpStream::connect(addr).await.is_err(), "listener still accepts after shutdown");
    })
    .await;
}

#[tokio::test]
async fn shutdown_cuts_calls_after_grace() {
    bounded(async {
        let up = start_echo().await;
        let mut cfg = config(&up.addr.to_string());
        cfg.resi.shutdown_grace = Duration::from_millis(300);
        let gw = Gateway::start(cfg).unwrap();
        let mut c = echo_client(gw_addr(&gw)).await;
        let hang = tokio::spawn(async move { c.unary(msg(b"", 0, "hang")).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        gw.shutdown().await;
        assert!(t.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t.elapsed());
        assert!(hang.await.unwrap().is_err());
        // Cutting the call cancelled it upstream too.
        let t = Instant::now();
        while up.counters.cancelled.load(Ordering::SeqCst) == 0 {
            assert!(t.elapsed() < Duration::from_secs(3), "upstream call not cancelled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn client_cancellation_reaches_upstream() {
    bounded(async {
        let up = start_echo().await;
        let gw = start_gw(up.addr);
        let mut c = echo_client(gw_addr(&gw)).await;
        let r = tokio::time::timeout(Duration::from_millis(300), c.unary(msg(b"", 0, "hang"))).await;
        assert!(r.is_err(), "hang call answered?");
        let t = Instant::now();
        while up.counters.cancelled.load(Ordering::SeqCst) == 0 {
            assert!(t.elapsed() < Duration::from_secs(3), "cancellation did not reach the upstream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The connection is still good.
        c.unary(msg(b"ok", 0, "")).await.unwrap();
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn no_task_left_after_shutdown() {
    bounded(async {
        let up = start_echo().await;
        let metrics = tokio::runtime::Handle::current().metrics();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let baseline = metrics.num_alive_tasks();
        let gw = start_gw(up.addr);
        {
            let mut c = echo_client(gw_addr(&gw)).await;
            c.unary(msg(b"x", 0, "")).await.unwrap();
            let mut s = c.server_stream(msg(b"x", 3, "")).await.unwrap().into_inner();
            while s.message().await.unwrap().is_some() {}
        }
        gw.shutdown().await;
        // The upstream's side of the gateway's connection ends as well.
        common::assert_tasks_settle(baseline).await;
    })
    .await;
}

// ---- Modify ----

#[tokio::test]
async fn modify_hop_info_is_answered_by_first_hop() {
    bounded(async {
        let up = start_echo_esi(&[2, 77]).await;
        let gw = start_gw(up.addr);
        let mut c = esi_client(gw_addr(&gw)).await;
        let rsp = c.modify(modify_req(2, true, b"")).await.unwrap().into_inner();
        let ext = rsp.ext.unwrap();
        assert_eq!(ext.id, 2);
        let info = resi::proto::resi::HopInfo::decode(ext.data).unwrap();
        assert_eq!(info.name, "gw-test");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(up.counters.modify_calls.load(Ordering::SeqCst), 1, "only the discovery probe reached the server");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn modify_unknown_pass_true_reaches_upstream() {
    bounded(async {
        let up = start_echo_esi(&[77]).await;
        let gw = start_gw(up.addr);
        let mut c = esi_client(gw_addr(&gw)).await;
        let mut req = tonic::Request::new(modify_req(77, true, b"payload"));
        req.metadata_mut().insert("x-ascii", MetadataValue::from_static("hello"));
        let rsp = c.modify(req).await.unwrap().into_inner();
        let ext = rsp.ext.unwrap();
        assert_eq!((ext.id, ext.pass), (77, true));
        assert_eq!(ext.data.as_ref(), [ESI_MARKER, b"payload"].concat().as_slice());
        // The probe (extension 1) and this call.
        assert_eq!(up.counters.modify_calls.load(Ordering::SeqCst), 2);
        // The plain Esi server refused extension 1: a plain upstream.
        assert!(matches!(gw.upstream_kind(), Some(UpstreamKind::Plain { .. })));

        // The upstream does not know 78 either: its own refusal comes back.
        let st = c.modify(modify_req(78, true, b"")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unimplemented);
        assert!(st.message().contains("78"));
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn modify_unknown_pass_false_is_unimplemented_here() {
    bounded(async {
        let up = start_echo_esi(&[77]).await;
        let gw = start_gw(up.addr);
        let mut c = esi_client(gw_addr(&gw)).await;
        let st = c.modify(modify_req(77, false, b"x")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unimplemented);
        assert!(st.message().contains("extension 77"), "{st:?}");
        assert!(st.message().contains("pass=false"), "{st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(up.counters.modify_calls.load(Ordering::SeqCst) <= 1, "the call was forwarded");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn modify_without_ext_is_invalid_argument() {
    bounded(async {
        let up = start_echo_esi(&[77]).await;
        let gw = start_gw(up.addr);
        let mut c = esi_client(gw_addr(&gw)).await;
        let st = c.modify(ModifyRequest { ext: None }).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        // A merge over HTTP/2 is refused too.
        let merge = resi::proto::resi::Redundancy {
            msg: Some(resi::proto::resi::redundancy::Msg::Merge(resi::proto::resi::MergeRequest::default())),
        };
        let st = c.modify(modify_req(1, false, &merge.encode_to_vec())).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
        assert!(st.message().contains("path"), "{st:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn modify_runtime_handlers() {
    bounded(async {
        let up = start_echo_esi(&[]).await;
        let gw = start_gw(up.addr);
        let mut c = esi_client(gw_addr(&gw)).await;

        gw.extensions().register(
            500,
            handler_fn(|ext: resi::proto::esi::Extension| async move {
                let mut out = b"handled:".to_vec();
                out.extend_from_slice(&ext.data);
                Ok(Bytes::from(out))
            }),
        );
        let ext = c.modify(modify_req(500, false, b"abc")).await.unwrap().into_inner().ext.unwrap();
        assert_eq!((ext.id, ext.data.as_ref()), (500, b"handled:abc".as_slice()));

        gw.extensions()
            .register(501, handler_fn(|_ext| async move { Err(RStatus::new(RCode::PermissionDenied, "not for you")) }));
        let st = c.modify(modify_req(501, true, b"")).await.unwrap_err();
        assert_eq!((st.code(), st.message()), (Code::PermissionDenied, "not for you"));

        gw.extensions().register(
            502,
            handler_fn(|_ext| async move {
                if true {
                    panic!("handler bug");
                }
                Ok(Bytes::new())
            }),
        );
        let st = c.modify(modify_req(502, false, b"")).await.unwrap_err();
        assert_eq!(st.code(), Code::Internal, "{st:?}");

        gw.extensions().unregister(500);
        let st = c.modify(modify_req(500, false, b"abc")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unimplemented);
        // The gateway survived the panic.
        let ext = c.modify(modify_req(2, false, b"")).await.unwrap().into_inner().ext.unwrap();
        assert_eq!(ext.id, 2);
        let _ = Arc::new(());
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    bounded(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let mut cfg = config("127.0.0.1:1");
        cfg.tcp.as_mut().unwrap().listen = vec![addr.clone()];
        let err = match Gateway::start(cfg) {
            Ok(_) => panic!("bound a taken port"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&addr), "{err}");
    })
    .await;
}

#[tokio::test]
async fn silent_upstream_is_unavailable_after_connect_timeout() {
    bounded(async {
        // Accepts TCP, never says a word.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let holder = tokio::spawn(async move {
            let mut held = vec![];
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let gw = start_gw(addr);
        let mut c = echo_client(gw_addr(&gw)).await;
        let t = Instant::now();
        let st = c.unary(msg(b"x", 0, "")).await.unwrap_err();
        assert_eq!(st.code(), Code::Unavailable, "{st:?}");
        assert!(st.message().contains(&addr.to_string()), "{st:?}");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2500), "took {took:?}");

        // A caller's shorter deadline is honoured while waiting. A raw h2
        // client, so no client-side timer races the hop's answer.
        let t = Instant::now();
        let trailers = raw_call(gw_addr(&gw), "/resitest.Echo/Unary", &[("grpc-timeout", "200m")]).await;
        assert_eq!(trailers.get("grpc-status").unwrap(), "4", "{trailers:?}");
        assert!(t.elapsed() < Duration::from_millis(800), "took {:?}", t.elapsed());
        gw.shutdown().await;
        holder.abort();
    })
    .await;
}

/// One gRPC call with an empty message over a bare hyper h2c client; returns
/// the status headers (trailers, or the headers of a trailers-only answer).
async fn raw_call(addr: std::net::SocketAddr, path: &str, headers: &[(&'static str, &'static str)]) -> http::HeaderMap {
    use http_body_util::{BodyExt, Full};
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, http::HeaderValue::from_static(v));
    }
    let rsp = tx.send_request(req).await.unwrap();
    let out = if rsp.headers().contains_key("grpc-status") {
        rsp.headers().clone()
    } else {
        rsp.into_body().collect().await.unwrap().trailers().cloned().unwrap_or_default()
    };
    driver.abort();
    out
}

#[tokio::test]
async fn modify_over_max_message_size_is_refused() {
    bounded(async {
        let up = start_echo_esi(&[77]).await;
        let mut cfg = config(&up.addr.to_string());
        cfg.resi.max_message_size = 1024;
        let gw = Gateway::start(cfg).unwrap();
        let mut c = esi_client(gw_addr(&gw)).await;
        let st = c.modify(modify_req(2, false, &[0u8; 4096])).await.unwrap_err();
        assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
        // Forwarded calls are limited too (tests/limits.rs has the rest);
        // smaller ones pass.
        let mut e = echo_client(gw_addr(&gw)).await;
        let st = e.unary(msg(&[0u8; 4096], 0, "")).await.unwrap_err();
        assert_eq!(st.code(), Code::ResourceExhausted, "{st:?}");
        e.unary(msg(&[0u8; 512], 0, "")).await.unwrap();
        gw.shutdown().await;
    })
    .await;
}
