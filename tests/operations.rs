//! What operators watch: the gRPC health service a gateway answers itself
//! (checked with tonic-health's client) and the Prometheus endpoint
//! (scraped with a real HTTP/1.1 client and parsed).

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use resi::config::Config;
use resi::gateway::{Gateway, GatewayError};
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use common::echo::*;

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out");
}

fn gateway(name: &str, listen: usize, upstream: &[String], metrics: bool) -> Gateway {
    let listen: Vec<String> = vec!["\"127.0.0.1:0\"".to_string(); listen];
    let upstream: Vec<String> = upstream.iter().map(|a| format!("{a:?}")).collect();
    let mut text = format!(
        "[Tcp]\nListen = [{}]\nAddress = [{}]\n[Resi]\nName = {name:?}\nHeartbeatInterval = \"100ms\"\n\
         DeadTimeout = \"500ms\"\nRedialMaxBackoff = \"300ms\"\nConnectTimeout = \"2s\"\n",
        listen.join(", "),
        upstream.join(", ")
    );
    if metrics {
        text.push_str("[Metrics]\nListen = \"127.0.0.1:0\"\n");
    }
    let cfg = Config::from_toml_str(&text, "<test>").expect("valid configuration");
    Gateway::start(cfg).expect("gateway starts")
}

async fn health(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    HealthClient::new(channel(addr).await)
}

async fn check(c: &mut HealthClient<tonic::transport::Channel>, service: &str) -> Result<ServingStatus, tonic::Status> {
    let rsp = c.check(HealthCheckRequest { service: service.into() }).await?;
    Ok(rsp.into_inner().status())
}

/// Polls `Check("")` until it says `want` (at most 10 s).
async fn wait_status(c: &mut HealthClient<tonic::transport::Channel>, want: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = check(c, "").await.expect("Check answers");
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "health stayed {got:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_reflects_a_plain_upstream() {
    bounded(async {
        let up = start_echo_esi(&[]).await;
        let gw = gateway("health-gw", 1, &[up.addr.to_string()], false);
        let mut c = health(gw.local_addrs()[0]).await;
        wait_status(&mut c, ServingStatus::Serving).await;
        for svc in resi::gateway::health::SERVICES {
            assert_eq!(check(&mut c, svc).await.unwrap(), ServingStatus::Serving, "service {svc:?}");
        }
        let err = check(&mut c, "no.such.Service").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(up.counters.echo_calls.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Watch: SERVING now, NOT_SERVING once the upstream is gone.
        let mut watch = c.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        let first = watch.next().await.expect("a first answer").unwrap();
        assert_eq!(first.status(), ServingStatus::Serving);
        up.stop().await;
        let next = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("a change within 10 s");
        assert_eq!(next.expect("stream open").unwrap().status(), ServingStatus::NotServing);
        wait_status(&mut c, ServingStatus::NotServing).await;

        let mut unknown = c.watch(HealthCheckRequest { service: "x.Y".into() }).await.unwrap().into_inner();
        assert_eq!(unknown.next().await.unwrap().unwrap().status(), ServingStatus::ServiceUnknown);

        // Shutdown ends a Watch at once (it does not hold the grace period).
        let started = Instant::now();
        gw.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = watch.next().await {}
        });
        end.await.expect("the Watch ends when the gateway stops");
    })
    .await;
}

#[tokio::test]
async fn health_of_a_client_gateway_follows_its_session() {
    bounded(async {
        let up = start_echo_esi(&[]).await;
        let end = gateway("end", 2, &[up.addr.to_string()], false);
        let paths: Vec<String> = end.local_addrs().iter().map(|a| a.to_string()).collect();
        let client = gateway("client", 1, &paths, false);
        let mut c = health(client.local_addrs()[0]).await;
        wait_status(&mut c, ServingStatus::Serving).await;
        assert!(matches!(client.upstream_kind(), Some(resi::gateway::UpstreamKind::Resi { .. })));
        // The end gateway goes away: the session has no live path.
        end.shutdown().await;
        wait_status(&mut c, ServingStatus::NotServing).await;
        client.shutdown().await;
    })
    .await;
}

/// `GET path` over HTTP/1.1; the status, content type and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics endpoint");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).unwrap();
    let rsp = tx.send_request(req).await.expect("an answer");
    let status = rsp.status().as_u16();
    let ctype = rsp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

/// Samples of an exposition: series (name with labels) → value. Checks
/// the shape on the way: every sample's family has its TYPE line first.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(typed.contains(name), "sample {name} before its TYPE");
        samples.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}")));
    }
    samples
}

fn sum(samples: &HashMap<String, f64>, prefix: &str, label: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix) && k.contains(label)).map(|(_, v)| v).sum()
}

#[tokio::test]
async fn metrics_count_calls_sessions_and_paths() {
    bounded(async {
        let up = start_echo_esi(&[]).await;
        let end = gateway("end-ops", 2, &[up.addr.to_string()], true);
        let paths: Vec<String> = end.local_addrs().iter().map(|a| a.to_string()).collect();
        let client = gateway("client-ops", 1, &paths, true);
        common::wait_live(&client, 2).await;
        let mut echo = echo_client(client.local_addrs()[0]).await;
        for i in 0..5u32 {
            let m = Msg { body: pattern(1000, i as u8), count: i, note: String::new() };
            echo.unary(m).await.expect("call through the pair");
        }
        for _ in 0..2 {
            let m = Msg { body: Bytes::new(), count: 5, note: "error".into() };
            assert_eq!(echo.unary(m).await.unwrap_err().code(), tonic::Code::NotFound);
        }

        let (status, ctype, text) = http_get(client.metrics_addr().unwrap(), "/metrics").await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
        let c = parse(&text);
        assert_eq!(c[r#"resi_calls_forwarded_total{code="OK"}"#], 5.0);
        assert_eq!(c[r#"resi_calls_forwarded_total{code="NOT_FOUND"}"#], 2.0);
        assert_eq!(c["resi_upstream_up"], 1.0);
        assert_eq!(c[r#"resi_sessions_open{role="dialled"}"#], 1.0);
        assert!(c.keys().any(|k| k.starts_with("resi_gateway_info{") && k.contains(r#"name="client-ops""#)));
        assert!(c["resi_connections_open"] >= 1.0, "the echo client's connection is served");
        for path in ["0", "1"] {
            let up_key = c.keys().find(|k| k.starts_with("resi_path_up{") && k.contains(&format!("path=\"{path}\""))).unwrap();
            assert_eq!(c[up_key], 1.0, "{up_key}");
        }
        assert!(sum(&c, "resi_path_sent_bytes_total", "role=\"dialled\"") > 5000.0);
        assert!(sum(&c, "resi_path_rtt_seconds", "role=\"dialled\"") > 0.0, "RTTs are reported");

        // The end gateway accepted the session: PRP counters add up to the
        // bytes it delivered, per copy.
        let (_, _, text) = http_get(end.metrics_addr().unwrap(), "/metrics").await;
        let e = parse(&text);
        assert_eq!(e[r#"resi_sessions_open{role="accepted"}"#], 1.0);
        let delivered = sum(&e, "resi_session_delivered_bytes_total", "role=\"accepted\"");
        let first = sum(&e, "resi_path_first_bytes_total", "role=\"accepted\"");
        assert!(delivered > 5000.0);
        assert_eq!(first, delivered, "each delivered byte came first on exactly one path");
        assert_eq!(sum(&e, "resi_path_mismatches_total", ""), 0.0);
        assert_eq!(sum(&e, "resi_path_corrupt_frames_total", ""), 0.0);
        assert_eq!(e[r#"resi_calls_forwarded_total{code="OK"}"#], 5.0);

        assert_eq!(http_get(end.metrics_addr().unwrap(), "/other").await.0, 404);
        client.shutdown().await;
        end.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_bind_error_names_the_key_and_address() {
    bounded(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let text = format!("[Tcp]\nListen = \"127.0.0.1:0\"\nAddress = \"127.0.0.1:9\"\n[Metrics]\nListen = \"{addr}\"\n");
        let cfg = Config::from_toml_str(&text, "<test>").unwrap();
        let err = Gateway::start(cfg).err().expect("the port is taken");
        assert!(matches!(err, GatewayError::MetricsBind { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("[Metrics] Listen"), "{msg}");
    })
    .await;
}

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(str::to_string).collect()
    }
}

fn log_options(format: resi::logs::LogFormat, window: Duration) -> resi::logs::LogOptions {
    resi::logs::LogOptions { format, name: Some("end-gw".into()), repeat_window: window, ansi: false }
}

#[test]
fn json_logs_carry_the_name_and_repeated_warnings_are_summarised() {
    let sink = Sink::default();
    let writer = sink.clone();
    let window = Duration::from_secs(2);
    let sub = resi::logs::subscriber(
        log_options(resi::logs::LogFormat::Json, window),
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    tracing::subscriber::with_default(sub, || {
        tracing::info!(paths = 2, "session opened");
        for _ in 0..10 {
            tracing::warn!(peer = "127.0.0.1:9", "upstream unreachable");
        }
        tracing::debug!("not at this level");
        // Past the window: the next repeat is written, with the count.
        std::thread::sleep(window + Duration::from_millis(200));
        tracing::warn!(peer = "127.0.0.1:9", "upstream unreachable");
    });
    let records: Vec<serde_json::Value> =
        sink.lines().iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}"))).collect();
    assert_eq!(records.len(), 3, "{records:#?}");
    for r in &records {
        assert_eq!(r["gateway"], "end-gw");
        assert!(r["timestamp"].is_string() && r["target"].is_string(), "{r}");
    }
    assert_eq!((&records[0]["level"], &records[0]["message"], &records[0]["paths"]), (&"INFO".into(), &"session opened".into(), &2.into()));
    assert_eq!(records[1]["message"], "upstream unreachable");
    assert_eq!(records[1]["peer"], "127.0.0.1:9");
    assert!(records[1].get("more_like_this").is_none());
    assert_eq!(records[2]["more_like_this"], 9, "the nine left out are counted");
}

#[test]
fn text_logs_carry_the_name() {
    let sink = Sink::default();
    let writer = sink.clone();
    let sub = resi::logs::subscriber(
        log_options(resi::logs::LogFormat::Text, Duration::from_secs(60)),
        tracing_subscriber::EnvFilter::new("info"),
        move || writer.clone(),
    );
    tracing::subscriber::with_default(sub, || {
        tracing::warn!("path 1 is down");
        tracing::warn!("path 1 is down");
        tracing::error!("path 1 is down");
    });
    let lines = sink.lines();
    assert_eq!(lines.len(), 2, "the repeated WARN is left out, the ERROR is another record: {lines:?}");
    assert!(lines.iter().all(|l| l.ends_with(" gateway=end-gw") && l.contains("path 1 is down")), "{lines:?}");
    assert!(lines[0].contains("WARN") && lines[1].contains("ERROR"));
}
