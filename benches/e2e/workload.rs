//! The measured workloads, each driven by one tonic client over one
//! HTTP/2 connection, every answer checked against what was asked.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::echo::{EchoClient, Msg};

pub type Client = EchoClient<Channel>;

/// Unary request and response body of the latency and calls/s workloads.
pub const SMALL: usize = 64;
/// Unary body of the large-message workload.
pub const LARGE: usize = 16 * 1024;
/// Server-stream chunk.
pub const CHUNK: usize = 64 * 1024;
/// Chunks per server-stream call (1 MiB).
const CHUNKS_PER_CALL: u32 = 16;

fn msg(len: usize) -> Msg {
    Msg { body: Bytes::from(vec![0x5a; len]), count: 0, note: String::new() }
}

/// One unary call whose answer must echo the request.
async fn unary_checked(c: &mut Client, m: &Msg) -> Result<(), String> {
    let reply = c.unary(m.clone()).await.map_err(|s| format!("unary call failed: {s}"))?.into_inner();
    if reply.body != m.body {
        return Err(format!("a unary answer of {} bytes differs from its request", reply.body.len()));
    }
    Ok(())
}

/// The `q` quantile of `v` (sorted here).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

/// p50 and p99 of sequential 64-byte unary calls, in µs.
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

pub async fn latency(c: &Client, secs: f64) -> Result<Latency, String> {
    let (mut c, m) = (c.clone(), msg(SMALL));
    for _ in 0..50 {
        unary_checked(&mut c, &m).await?;
    }
    let mut lat = Vec::new();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        let t = Instant::now();
        unary_checked(&mut c, &m).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(Latency { p50_us: quantile(&mut lat, 0.5), p99_us: quantile(&mut lat, 0.99) })
}

/// Unary calls/s of `len`-byte messages with `concurrency` calls in flight.
pub async fn calls_per_s(c: &Client, secs: f64, concurrency: usize, len: usize) -> Result<f64, String> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (mut c, m) = (c.clone(), msg(len));
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < until {
                unary_checked(&mut c, &m).await?;
                n += 1;
            }
            Ok::<u64, String>(n)
        });
    }
    let mut calls = 0;
    while let Some(r) = tasks.join_next().await {
        calls += r.map_err(|e| format!("caller task: {e}"))??;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

/// MB/s (10^6 bytes) of server-streamed 64 KiB chunks, one call at a time.
pub async fn stream_mb_s(c: &Client, secs: f64) -> Result<f64, String> {
    let mut c = c.clone();
    let req = Msg { body: msg(CHUNK).body, count: CHUNKS_PER_CALL, note: String::new() };
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut bytes = 0usize;
    while Instant::now() < until {
        let failed = |s: tonic::Status| format!("server stream failed: {s}");
        let mut stream = c.server_stream(req.clone()).await.map_err(failed)?.into_inner();
        let mut n = 0;
        while let Some(m) = stream.message().await.map_err(failed)? {
            if m.body != req.body {
                return Err("a streamed chunk differs from the request's".into());
            }
            bytes += m.body.len();
            n += 1;
        }
        if n != CHUNKS_PER_CALL {
            return Err(format!("server stream ended after {n} of {CHUNKS_PER_CALL} chunks"));
        }
    }
    Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// What killing a path mid-run cost.
pub struct Cut {
    pub calls: usize,
    pub failed: usize,
    /// p99 of the calls that ended before the cut.
    pub steady_p99_us: f64,
    /// p99 of the calls in flight at the cut or started within a second
    /// after it.
    pub cut_p99_us: f64,
}

/// Waits (10 s at most) until `done` exceeds `seen`.
async fn more_than(done: &AtomicUsize, seen: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) <= seen && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Callers making 64-byte unary calls; `kill` runs after `secs` (once a
/// call has ended: a slow machine still gets a steady sample), and the
/// callers stop `secs` later (once a call has ended after the cut).
/// Failed calls are counted, not fatal.
pub async fn cut(c: &Client, secs: f64, concurrency: usize, kill: impl FnOnce()) -> Result<Cut, String> {
    let start = Instant::now();
    let (done, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (mut c, m, done, stop) = (c.clone(), msg(SMALL), done.clone(), stop.clone());
        tasks.spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = unary_checked(&mut c, &m).await;
                if let Err(e) = &ok {
                    if !e.starts_with("unary call failed") {
                        return Err(e.clone());
                    }
                }
                calls.push((t - start, t.elapsed(), ok.is_ok()));
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(calls)
        });
    }
    let half = Duration::from_secs_f64(secs);
    tokio::time::sleep(half).await;
    more_than(&done, 0).await;
    kill();
    let at = start.elapsed();
    let seen = done.load(Ordering::Relaxed);
    tokio::time::sleep(half).await;
    more_than(&done, seen).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    while let Some(r) = tasks.join_next().await {
        calls.extend(r.map_err(|e| format!("caller task: {e}"))??);
    }
    let window = at + Duration::from_secs(1).min(half);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut steady: Vec<f64> = calls.iter().filter(|(s, l, _)| *s + *l < at).map(|c| us(c.1)).collect();
    let mut over: Vec<f64> = calls.iter().filter(|(s, l, _)| *s + *l >= at && *s < window).map(|c| us(c.1)).collect();
    if steady.is_empty() || over.is_empty() {
        return Err("no call ended before or after the cut within 10 s".into());
    }
    Ok(Cut {
        calls: calls.len(),
        failed: calls.iter().filter(|c| !c.2).count(),
        steady_p99_us: quantile(&mut steady, 0.99),
        cut_p99_us: quantile(&mut over, 0.99),
    })
}
