//! The benchmark command's Rust part (`benches/e2e.rs`) in seconds, so it
//! cannot rot: one short round of every setup and workload, the killed
//! path and the idle-session memory figure, and the table it prints.
//! HAProxy is used when on PATH, two tokio relays otherwise; the pair as
//! two `resi gateway` processes is included when the `resi` command is on
//! PATH (as in CI, which installs the package first).

#[path = "common/echo.rs"]
#[allow(dead_code)]
mod echo;
#[path = "../benches/e2e/bench.rs"]
#[allow(dead_code)] // the bench's --profile mode is not smoke-tested
mod bench;
#[path = "../benches/e2e/hops.rs"]
mod hops;
#[path = "../benches/e2e/memory.rs"]
mod memory;
#[path = "../benches/e2e/processes.rs"]
mod processes;
#[path = "../benches/e2e/workload.rs"]
mod workload;

use std::time::{Duration, Instant};

fn on_path(name: &str, extra: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs = std::env::split_paths(&path).chain(extra.iter().map(std::path::PathBuf::from)).collect::<Vec<_>>();
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The memory figure re-runs this executable as its child end gateway.
    if let Some(i) = args.iter().position(|a| a == memory::CHILD_FLAG) {
        return memory::child_main(&args[i + 1]);
    }
    // `cargo test -- --list` and filters: this test has one case.
    if args.iter().any(|a| a == "--list") {
        println!("bench_smoke: test");
        return;
    }
    let resi = on_path("resi", &[]);
    let processes = usize::from(resi.is_some());
    let opts = bench::Opts { rounds: 2, secs: 0.2, haproxy: on_path("haproxy", &["/usr/sbin"]), resi, nkn: true, sessions: 8 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let started = Instant::now();
    let report = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), bench::run(&opts, |l| eprintln!("{l}")))
            .await
            .expect("the smoke run finishes within 120 s")
            .expect("every setup and workload runs with every answer checked")
    });
    let http2_hops = usize::from(opts.haproxy.is_some());
    assert_eq!(
        report.names.len(),
        5 + processes + http2_hops,
        "direct, two L4 hops, permissive, strict, (two processes,) TCP + NKN, (two HTTP/2 hops): {:?}",
        report.names
    );
    for (name, rounds) in report.names.iter().zip(&report.rounds) {
        assert_eq!(rounds.len(), 2, "{name}: one figure per round");
        for f in rounds {
            let all = [f.p50_us, f.p99_us, f.c64_per_s, f.c16_large_per_s, f.stream_mb_s];
            assert!(all.iter().all(|v| v.is_finite() && *v > 0.0), "{name}: every figure measured: {all:?}");
            assert!(f.p50_us <= f.p99_us, "{name}: p50 {} above p99 {}", f.p50_us, f.p99_us);
        }
    }
    assert_eq!(report.cuts.len(), 2);
    assert!(report.cuts.iter().all(|c| c.calls > c.failed && c.steady_p99_us > 0.0 && c.cut_p99_us > 0.0));
    assert!(report.idle_session_bytes > 0.0, "opening idle sessions grows the end gateway");
    let table = bench::table(&report);
    for row in ["| unary 64 B, c1, p50 µs |", "| unary 16 KiB, c16, calls/s |", "strict / permissive", "killed path", "idle session"] {
        assert!(table.contains(row), "the table has {row:?}:\n{table}");
    }
    if http2_hops == 1 {
        assert!(table.contains("two HTTP/2 hops (HAProxy) / L4 hops"), "the table has the HTTP/2 hops' ratios:\n{table}");
    }
    println!("{table}");
    println!("test bench_smoke ... ok ({:.1} s)", started.elapsed().as_secs_f64());
}
