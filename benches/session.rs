//! Criterion benchmarks of the frame path internals: the codec and the
//! session state machine moving a stream between two machines in memory
//! (no sockets), in each mode and with one or two paths.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use resi::frame::Frame;
use resi::session::machine::Machine;
use resi::session::{Mode, SessionConfig};

fn codec(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; 16 * 1024]);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(64 * payload.len() as u64));
    g.bench_function("encode_decode_64x16KiB", |b| {
        let mut buf = BytesMut::with_capacity(2 << 20);
        b.iter(|| {
            for i in 0..64u64 {
                Frame::encode_data(&mut buf, i * 16384, &payload, false);
            }
            let mut n = 0;
            while let Some(f) = Frame::decode(&mut buf, 1 << 20).unwrap() {
                if let Frame::Data { payload, .. } = f {
                    n += payload.len();
                }
            }
            assert_eq!(n, 64 * payload.len());
        })
    });
    g.finish();
}

/// Moves `total` bytes from machine A to machine B over `paths` lossless
/// in-memory paths.
fn transfer(mode: Mode, paths: u32, total: usize) {
    let now = Instant::now();
    let cfg = SessionConfig { mode, ..SessionConfig::default() };
    let (mut a, mut b) = (Machine::new(cfg.clone(), now), Machine::new(cfg, now));
    for p in 0..paths {
        a.add_path(p, true, now);
        b.add_path(p, true, now);
    }
    let chunk = Bytes::from(vec![1u8; 16 * 1024]);
    let (mut written, mut got) = (0, 0);
    let mut buf = BytesMut::with_capacity(512 * 1024);
    while got < total {
        while written < total && a.send_capacity() >= chunk.len() {
            a.push(chunk.clone());
            written += chunk.len();
        }
        for p in 0..paths {
            if a.poll_transmit(p, now, &mut buf, 256 * 1024) {
                while let Some(f) = Frame::decode(&mut buf, 1 << 20).unwrap() {
                    b.on_frame(p, f, now);
                }
            }
        }
        while let Some(d) = b.take_delivered(usize::MAX) {
            got += d.len();
        }
        for p in 0..paths {
            if b.poll_transmit(p, now, &mut buf, 256 * 1024) {
                while let Some(f) = Frame::decode(&mut buf, 1 << 20).unwrap() {
                    a.on_frame(p, f, now);
                }
            }
        }
    }
}

fn machine(c: &mut Criterion) {
    let total = 16 << 20;
    let mut g = c.benchmark_group("machine_transfer_16MiB");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(20);
    for (mode, name) in [(Mode::Strict, "strict"), (Mode::Permissive, "permissive")] {
        for paths in [1, 2, 3] {
            g.bench_with_input(BenchmarkId::new(name, paths), &paths, |b, &paths| b.iter(|| transfer(mode, paths, total)));
        }
    }
    g.finish();
}

criterion_group!(benches, codec, machine);
criterion_main!(benches);
