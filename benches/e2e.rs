//! End-to-end benchmark: the same tonic client and server, compared in one
//! run over
//!
//! - `direct`: client → server;
//! - `l4x2`: client → L4 proxy → L4 proxy → server (the floor a gateway
//!   pair is held to: two plain TCP relay hops on the same machine);
//! - `resi-permissive` / `resi-strict`: client → client gateway ⇒ two TCP
//!   paths ⇒ end gateway → server.
//!
//! Reported per setup, median of `RUNS` runs: latency of one unary call
//! (median of sequential calls), unary throughput with 64 calls in flight,
//! and server-streaming throughput. Run with `cargo bench --bench e2e`;
//! `E2E_RUNS`, `E2E_SECS` tune it.

#[path = "../tests/common/echo.rs"]
#[allow(dead_code)]
mod echo;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use echo::{echo_client, start_echo, Msg};
use resi::config::{Config, ResiConfig, TcpConfig};
use resi::gateway::Gateway;
use resi::session::Mode;
use tokio::net::{TcpListener, TcpStream};

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A plain L4 relay: every accepted connection is copied to `target`.
async fn l4_proxy(target: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            inbound.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut outbound = TcpStream::connect(target).await.unwrap();
                outbound.set_nodelay(true).unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

fn gateway(mode: Mode, listen: usize, upstream: Vec<String>) -> Gateway {
    let resi = ResiConfig { mode, ..ResiConfig::default() };
    let tcp = TcpConfig { listen: vec!["127.0.0.1:0".into(); listen], address: upstream };
    Gateway::start(Config { source: None, tcp: Some(tcp), nkn: None, resi, reverse: None, tls: None, metrics: None }).unwrap()
}

struct Figures {
    latency_us: f64,
    unary_per_s: f64,
    stream_mib_s: f64,
}

async fn measure(addr: SocketAddr, secs: f64) -> Figures {
    let mut c = echo_client(addr).await;
    let small = Msg { body: vec![1u8; 100].into(), count: 0, note: String::new() };
    for _ in 0..200 {
        c.unary(small.clone()).await.unwrap();
    }
    // Latency: sequential calls.
    let mut lat = vec![];
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        let t = Instant::now();
        c.unary(small.clone()).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let latency_us = lat[lat.len() / 2];
    // Throughput: 64 calls in flight.
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = vec![];
    for _ in 0..64 {
        let mut c = c.clone();
        let m = small.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                c.unary(m.clone()).await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let start = Instant::now();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.unwrap();
    }
    let unary_per_s = calls as f64 / start.elapsed().as_secs_f64();
    // Streaming: server-streamed 64 KiB messages.
    let body: bytes::Bytes = vec![7u8; 64 * 1024].into();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut bytes = 0u64;
    while Instant::now() < until {
        let req = Msg { body: body.clone(), count: 256, note: String::new() };
        let mut s = c.server_stream(req).await.unwrap().into_inner();
        while let Some(m) = s.message().await.unwrap() {
            bytes += m.body.len() as u64;
        }
    }
    let stream_mib_s = bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    Figures { latency_us, unary_per_s, stream_mib_s }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let runs = env_num("E2E_RUNS", 3) as usize;
    let secs = env_num("E2E_SECS", 2) as f64;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let server = start_echo().await;
        let p2 = l4_proxy(server.addr).await;
        let p1 = l4_proxy(p2).await;
        let mut setups: Vec<(&str, SocketAddr, Vec<Gateway>)> = vec![("direct", server.addr, vec![]), ("l4x2", p1, vec![])];
        if std::env::var("E2E_PLAIN_HOP").is_ok() {
            let hop = gateway(Mode::Strict, 1, vec![server.addr.to_string()]);
            setups.push(("gw-plain-hop", hop.local_addrs()[0], vec![hop]));
        }
        for (name, mode) in [("resi-permissive", Mode::Permissive), ("resi-strict", Mode::Strict)] {
            let end = gateway(mode, 2, vec![server.addr.to_string()]);
            let up = end.local_addrs().iter().map(|a| a.to_string()).collect();
            let client = gateway(mode, 1, up);
            let addr = client.local_addrs()[0];
            // Wait until the session is up with both paths.
            for _ in 0..200 {
                if let Some(s) = client.upstream_session() {
                    if s.stats().await.is_some_and(|st| st.paths.iter().filter(|p| p.live).count() == 2) {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            setups.push((name, addr, vec![end, client]));
        }
        println!("machine: {} cores, {}", num_cpus(), cpu_model());
        println!("runs: {runs} x {secs}s per figure; medians");
        println!("{:<16} {:>12} {:>14} {:>14}", "setup", "latency µs", "unary/s @64", "stream MiB/s");
        let mut results = vec![];
        for (name, addr, _) in &setups {
            let mut figs = vec![];
            for _ in 0..runs {
                figs.push(measure(*addr, secs).await);
            }
            let f = Figures {
                latency_us: median(figs.iter().map(|f| f.latency_us).collect()),
                unary_per_s: median(figs.iter().map(|f| f.unary_per_s).collect()),
                stream_mib_s: median(figs.iter().map(|f| f.stream_mib_s).collect()),
            };
            println!("{:<16} {:>12.1} {:>14.0} {:>14.1}", name, f.latency_us, f.unary_per_s, f.stream_mib_s);
            results.push((name.to_string(), f));
        }
        let floor = &results[1].1;
        for (name, f) in results.iter().skip(2) {
            println!(
                "{name}: latency {:.2}x floor (target ≤ 1.25), unary@64 {:.2}x (≥ 0.75), stream {:.2}x (≥ 0.75)",
                f.latency_us / floor.latency_us,
                f.unary_per_s / floor.unary_per_s,
                f.stream_mib_s / floor.stream_mib_s
            );
        }
        let n = results.len();
        let (perm, strict) = (&results[n - 2].1, &results[n - 1].1);
        println!("strict/permissive latency {:.2}x (target ≤ 1.2)", strict.latency_us / perm.latency_us);
        for (_, _, gws) in setups {
            for gw in gws {
                gw.shutdown().await;
            }
        }
    });
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown cpu".into())
}
