//! The session state machine under a simulated network and a fake clock:
//! two machines joined by several links that can drop, delay, reorder,
//! duplicate, corrupt, die, go silent and come back.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Default)]
struct LinkSpec {
    delay: Duration,
    jitter: Duration,
    loss: f64,
    dup: f64,
    /// Share of frames whose bytes are altered *after* encoding (a bit
    /// flipped on the wire): the CRC-32C must catch every one.
    bitflip: f64,
    /// Share of DATA frames whose payload is altered *before* encoding (an
    /// altering peer that recomputes the check): only comparison catches it.
    corrupt: f64,
    reliable: bool,
}

/// What arrives at the far end of a link.
#[derive(Clone)]
enum Wire {
    Frame(Frame),
    /// A frame that failed its CRC-32C at the reader.
    Corrupt,
}

struct Link {
    spec: LinkSpec,
    queue: Vec<(Instant, u64, Wire)>,
    blackhole: bool,
    up: bool,
    down_at: Option<Instant>,
}

struct Side {
    m: Machine,
    source: Vec<u8>,
    fed: usize,
    received: Vec<u8>,
    events: Vec<Event>,
}

struct Sim {
    now: Instant,
    rng: StdRng,
    seq: u64,
    sides: [Side; 2],
    /// links[dir][path]: dir 0 is a→b, 1 is b→a.
    links: [Vec<Link>; 2],
    max_buffered: usize,
    /// Loss on unreliable links applies to DATA frames only.
    data_only_loss: bool,
    /// Reopen a closed link after this long (the dialler's redial).
    auto_redial: Option<Duration>,
    /// Whether an acceptor answers the cookie requests it gets (as its
    /// driver does, from a counter instead of a cookie jar).
    grant_cookies: bool,
    cookie_requests: u32,
    cookies_issued: u64,
}

fn cfg(mode: Mode) -> SessionConfig {
    SessionConfig {
        mode,
        heartbeat_interval: Duration::from_millis(50),
        dead_timeout: Duration::from_millis(300),
        send_window: 256 * 1024,
        resume_timeout: Duration::from_secs(3),
        ..SessionConfig::default()
    }
}

fn payload(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random()).collect()
}

impl Sim {
    fn new(mode: Mode, specs: Vec<LinkSpec>, seed: u64) -> Sim {
        let now = Instant::now();
        let mk = |src: Vec<u8>| Side { m: Machine::new(cfg(mode), now), source: src, fed: 0, received: vec![], events: vec![] };
        let mut sim = Sim {
            now,
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            sides: [mk(payload(400_000, seed)), mk(payload(150_000, seed + 1))],
            links: [vec![], vec![]],
            max_buffered: 0,
            data_only_loss: false,
            auto_redial: None,
            grant_cookies: true,
            cookie_requests: 0,
            cookies_issued: 0,
        };
        for (i, spec) in specs.into_iter().enumerate() {
            for dir in 0..2 {
                sim.links[dir].push(Link { spec: spec.clone(), queue: vec![], blackhole: false, up: true, down_at: None });
                sim.sides[dir].m.add_path(i as u32, spec.reliable, now);
            }
        }
        sim
    }

    fn step(&mut self) {
        let now = self.now;
        for s in 0..2 {
            // Application writes as the window allows.
            let side = &mut self.sides[s];
            let cap = side.m.send_capacity().min(side.source.len() - side.fed).min(10_000);
            if cap > 0 {
                let chunk = Bytes::copy_from_slice(&side.source[side.fed..side.fed + cap]);
                side.fed += cap;
                side.m.push(chunk);
            }
            // Transmit on every path.
            for p in 0..self.links[s].len() {
                let mut buf = BytesMut::new();
                if !self.links[s][p].up || !self.sides[s].m.poll_transmit(p as u32, now, &mut buf, 32 * 1024) {
                    continue;
                }
                while let Some(frame) = Frame::decode(&mut buf, 1 << 20).unwrap() {
                    self.enqueue(s, p, frame);
                }
            }
        }
        // Deliver what is due.
        for dir in 0..2 {
            for p in 0..self.links[dir].len() {
                let link = &mut self.links[dir][p];
                let (due, rest): (Vec<_>, Vec<_>) = link.queue.drain(..).partition(|(t, ..)| *t <= now);
                link.queue = rest;
                let mut due = due;
                due.sort_by_key(|(t, seq, _)| (*t, *seq));
                for (_, _, wire) in due {
                    match wire {
                        Wire::Frame(frame) => self.sides[1 - dir].m.on_frame(p as u32, frame, now),
                        Wire::Corrupt => self.sides[1 - dir].m.on_corrupt(p as u32, now),
                    }
                }
            }
        }
        for s in 0..2 {
            let side = &mut self.sides[s];
            while let Some(data) = side.m.take_delivered(usize::MAX) {
                side.received.extend_from_slice(&data);
            }
            if side.m.poll_timeout().is_some_and(|t| t <= now) {
                side.m.handle_timeout(now);
            }
            if let Some(count) = side.m.poll_cookie_request() {
                self.cookie_requests += 1;
                if self.grant_cookies {
                    let first = self.cookies_issued;
                    self.cookies_issued += count as u64;
                    let cookies = (first..self.cookies_issued).map(|k| Bytes::from(format!("granted-{k}"))).collect();
                    side.m.grant_cookies(cookies, Duration::from_secs(2));
                }
            }
            self.max_buffered = self.max_buffered.max(side.m.buffered_bytes());
            while let Some(ev) = self.sides[s].m.poll_event() {
                // A path one side dropped is closed: the other side sees the
                // connection end, unless it is black-holed.
                if let Event::PathDown { path, .. } = &ev {
                    let p = *path as usize;
                    if !self.links[0][p].blackhole {
                        self.close_link(p, "peer closed");
                    }
                }
                self.sides[s].events.push(ev);
            }
        }
        if let Some(after) = self.auto_redial {
            for p in 0..self.links[0].len() {
                if self.links[0][p].down_at.is_some_and(|t| now >= t + after) {
                    self.reopen_link(p);
                }
            }
        }
        self.now += Duration::from_millis(1);
    }

    /// Encodes `frame`, flips one random bit outside the length field (a
    /// changed length is a different frame boundary, see frame.rs), and
    /// decodes it as the path reader would.
    fn flip_a_bit(&mut self, frame: &Frame) -> Wire {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let byte = loop {
            let b = self.rng.random_range(0..buf.len());
            if !(4..8).contains(&b) {
                break b;
            }
        };
        buf[byte] ^= 1 << self.rng.random_range(0..8);
        match Frame::decode(&mut buf, 1 << 20) {
            Err(e) if e.is_corrupt() => Wire::Corrupt,
            other => panic!("a flipped bit in byte {byte} was not caught: {other:?}"),
        }
    }

    fn enqueue(&mut self, dir: usize, p: usize, mut frame: Frame) {
        let link = &self.links[dir][p];
        if link.blackhole {
            return;
        }
        let spec = link.spec.clone();
        let is_data = matches!(frame, Frame::Data { .. });
        if !spec.reliable && (is_data || !self.data_only_loss) && self.rng.random_bool(spec.loss) {
            return;
        }
        if spec.corrupt > 0.0 {
            if let Frame::Data { payload, offset, fin } = &frame {
                if !payload.is_empty() && self.rng.random_bool(spec.corrupt) {
                    let mut bad = payload.to_vec();
                    bad[0] ^= 0xff;
                    frame = Frame::Data { offset: *offset, payload: bad.into(), fin: *fin };
                }
            }
        }
        let wire = if spec.bitflip > 0.0 && self.rng.random_bool(spec.bitflip) {
            self.flip_a_bit(&frame)
        } else {
            Wire::Frame(frame)
        };
        let copies = if !spec.reliable && self.rng.random_bool(spec.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = if spec.reliable || spec.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(self.rng.random_range(0..spec.jitter.as_micros() as u64))
            };
            // A reliable link keeps order: never deliver before the last one queued.
            let mut at = self.now + spec.delay + jitter;
            if spec.reliable {
                if let Some((last, ..)) = self.links[dir][p].queue.last() {
                    at = at.max(*last);
                }
            }
            self.seq += 1;
            self.links[dir][p].queue.push((at, self.seq, wire.clone()));
        }
    }

    fn close_link(&mut self, p: usize, why: &str) {
        let now = self.now;
        for dir in 0..2 {
            self.links[dir][p].up = false;
            self.links[dir][p].down_at = Some(now);
            self.links[dir][p].queue.clear();
            self.sides[dir].m.remove_path(p as u32, why, now);
        }
    }

    fn reopen_link(&mut self, p: usize) {
        let now = self.now;
        for dir in 0..2 {
            let link = &mut self.links[dir][p];
            link.up = true;
            link.down_at = None;
            link.blackhole = false;
            let reliable = link.spec.reliable;
            self.sides[dir].m.add_path(p as u32, reliable, now);
        }
    }

    /// Makes side 0 the dialler, holding `cookies` valid for `ttl`.
    fn with_dialer(mut self, cookies: &[&'static str], ttl: Duration) -> Sim {
        let cookies = cookies.iter().map(|c| Bytes::from_static(c.as_bytes())).collect();
        let mode = self.sides[0].m.mode();
        let mut m = Machine::dialer(cfg(mode), self.now, cookies, ttl);
        for (p, link) in self.links[0].iter().enumerate() {
            m.add_path(p as u32, link.spec.reliable, self.now);
        }
        self.sides[0].m = m;
        self
    }

    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    fn done(&self) -> bool {
        self.sides[1].received.len() == self.sides[0].source.len()
            && self.sides[0].received.len() == self.sides[1].source.len()
    }

    /// Runs until both streams arrived or `ms` of simulated time passed;
    /// returns the simulated milliseconds it took.
    fn run_until_done(&mut self, ms: u64) -> u64 {
        for t in 0..ms {
            if self.done() {
                return t;
            }
            self.step();
        }
        ms
    }

    fn check_exact(&self) {
        assert_eq!(self.sides[1].received.len(), self.sides[0].source.len(), "a→b length");
        assert!(self.sides[1].received == self.sides[0].source, "a→b bytes differ");
        assert!(self.sides[0].received == self.sides[1].source, "b→a bytes differ");
    }

    fn failed(&self, s: usize) -> Option<&SessionError> {
        self.sides[s].m.failed()
    }
}

fn tcp(delay_ms: u64) -> LinkSpec {
    LinkSpec { delay: Duration::from_millis(delay_ms), reliable: true, ..LinkSpec::default() }
}

fn lossy(delay_ms: u64, loss: f64) -> LinkSpec {
    LinkSpec {
        delay: Duration::from_millis(delay_ms),
        jitter: Duration::from_millis(20),
        loss,
        dup: 0.05,
        ..LinkSpec::default()
    }
}

#[test]
fn two_tcp_paths_deliver_exactly_once_in_each_mode() {
    for mode in [Mode::Strict, Mode::Permissive] {
        let mut sim = Sim::new(mode, vec![tcp(2), tcp(5)], 1);
        let t = sim.run_until_done(20_000);
        assert!(sim.done(), "{mode:?}: not done after {t} ms");
        sim.check_exact();
        assert!(sim.failed(0).is_none() && sim.failed(1).is_none());
    }
}

#[test]
fn lossy_reordering_duplicating_paths_still_deliver_exactly_once() {
    for seed in 0..8 {
        for mode in [Mode::Strict, Mode::Permissive] {
            let mut sim = Sim::new(mode, vec![lossy(10, 0.2), lossy(25, 0.1)], seed);
            sim.run_until_done(60_000);
            assert!(sim.done(), "seed {seed} {mode:?}: stalled at {} bytes", sim.sides[1].received.len());
            sim.check_exact();
        }
    }
}

#[test]
fn a_single_lossy_path_recovers_by_retransmission() {
    let mut sim = Sim::new(Mode::Strict, vec![lossy(5, 0.3)], 7);
    sim.run_until_done(60_000);
    sim.check_exact();
    let stats = sim.sides[0].m.path_stats(0).unwrap();
    assert!(stats.retransmitted_bytes > 0);
}

#[test]
fn permissive_mode_is_not_slowed_by_a_slow_path() {
    let mut fast_only = Sim::new(Mode::Permissive, vec![tcp(2)], 3);
    let alone = fast_only.run_until_done(60_000);
    let mut with_slow = Sim::new(Mode::Permissive, vec![tcp(2), tcp(400)], 3);
    let together = with_slow.run_until_done(60_000);
    with_slow.check_exact();
    assert!(together <= alone + alone / 5 + 5, "slow path slowed permissive: {together} ms vs {alone} ms");
    // Memory stays bounded by the window (send + receive side).
    assert!(with_slow.max_buffered <= 3 * 256 * 1024, "buffered {}", with_slow.max_buffered);
}

#[test]
fn strict_mode_waits_for_the_slowest_live_path() {
    let mut sim = Sim::new(Mode::Strict, vec![tcp(2), tcp(100)], 3);
    sim.run_for(60);
    // Nothing can be delivered before the slow copy arrived.
    assert!(sim.sides[1].received.is_empty());
    sim.run_until_done(60_000);
    sim.check_exact();
}

#[test]
fn strict_with_two_paths_fails_closed_on_a_mismatch_and_passes_nothing_bad() {
    let mut specs = vec![tcp(2), tcp(3)];
    specs[1].corrupt = 0.02;
    let mut sim = Sim::new(Mode::Strict, specs, 5);
    sim.run_for(5_000);
    for s in 0..2 {
        let got = &sim.sides[s].received;
        assert!(got[..] == sim.sides[1 - s].source[..got.len()], "a corrupted byte was delivered");
    }
    assert!(matches!(sim.failed(1), Some(SessionError::Mismatch { .. })) || matches!(sim.failed(0), Some(SessionError::Mismatch { .. })));
    assert!(sim.sides.iter().any(|s| s.events.iter().any(|e| matches!(e, Event::Mismatch { path: 1, .. }))));
}

#[test]
fn strict_with_three_paths_lets_the_majority_win() {
    for corrupt_path in 0..3 {
        let mut specs = vec![tcp(2), tcp(3), tcp(4)];
        specs[corrupt_path].corrupt = 0.05;
        let mut sim = Sim::new(Mode::Strict, specs, 9);
        sim.run_until_done(30_000);
        assert!(sim.failed(0).is_none() && sim.failed(1).is_none(), "path {corrupt_path}: {:?}", sim.failed(1));
        sim.check_exact();
        let dropped = sim.sides.iter().any(|s| {
            s.events.iter().any(|e| matches!(e, Event::PathDown { path, reason } if *path as usize == corrupt_path && reason.contains("majority")))
        });
        assert!(dropped, "odd path {corrupt_path} not dropped");
    }
}

#[test]
fn permissive_reports_mismatches_and_delivers_the_first_copy() {
    let mut specs = vec![tcp(1), tcp(30)];
    specs[1].corrupt = 0.3;
    let mut sim = Sim::new(Mode::Permissive, specs, 11);
    sim.run_until_done(30_000);
    sim.run_for(100);
    sim.check_exact();
    assert!(sim.sides[1].m.path_stats(1).unwrap().mismatches > 0);
}

#[test]
fn a_black_holed_path_is_dropped_within_the_dead_timeout_and_strict_goes_on() {
    let mut sim = Sim::new(Mode::Strict, vec![tcp(2), tcp(2)], 13);
    sim.run_for(5);
    for dir in 0..2 {
        sim.links[dir][1].blackhole = true;
    }
    let before = sim.sides[1].received.len();
    sim.run_for(400); // dead timeout is 300 ms
    assert!(!sim.sides[1].m.is_live(1));
    assert!(sim.sides[1].received.len() > before, "strict stalled after the path was dropped");
    sim.run_until_done(30_000);
    sim.check_exact();
}

#[test]
fn a_readmitted_path_carries_the_session_when_the_other_dies() {
    for mode in [Mode::Strict, Mode::Permissive] {
        let mut sim = Sim::new(mode, vec![tcp(2), tcp(3)], 17);
        sim.run_for(30);
        sim.close_link(1, "killed");
        sim.run_for(100);
        sim.reopen_link(1);
        sim.run_for(20);
        sim.close_link(0, "killed");
        sim.run_until_done(30_000);
        sim.check_exact();
        assert!(sim.sides[1].events.iter().any(|e| matches!(e, Event::PathUp { path: 1, readmitted: true })));
    }
}

#[test]
fn an_outage_of_every_path_is_survived_within_the_resume_timeout() {
    let mut sim = Sim::new(Mode::Strict, vec![tcp(2), tcp(3)], 19);
    sim.run_for(30);
    sim.close_link(0, "killed");
    sim.close_link(1, "killed");
    sim.run_for(2_000);
    assert!(sim.failed(0).is_none());
    sim.reopen_link(1);
    sim.run_until_done(30_000);
    sim.check_exact();

    let mut sim = Sim::new(Mode::Strict, vec![tcp(2)], 19);
    sim.run_for(30);
    sim.close_link(0, "killed");
    sim.run_for(3_100);
    assert!(matches!(sim.failed(0), Some(SessionError::ResumeTimeout(_))));
}

#[test]
fn fin_ends_the_stream_after_the_last_byte() {
    let mut sim = Sim::new(Mode::Strict, vec![tcp(2), lossy(4, 0.2)], 23);
    sim.run_until_done(30_000);
    sim.sides[0].m.finish();
    sim.run_for(500);
    assert!(sim.sides[1].m.at_eof());
    assert!(sim.sides[0].m.all_acked());
    assert!(!sim.sides[0].m.at_eof());
}

/// Drops DATA frames on one link but lets heartbeats and acks through.
fn starve_data(sim: &mut Sim, p: usize) {
    sim.links[0][p].spec.corrupt = 0.0;
    sim.links[0][p].spec.loss = 1.0;
    sim.links[0][p].spec.reliable = false;
}

#[test]
fn a_path_with_heartbeats_but_no_data_is_dropped_in_strict_mode() {
    let mut sim = Sim::new(Mode::Strict, vec![tcp(2), tcp(2)], 29);
    sim.run_for(5);
    starve_data(&mut sim, 1);
    sim.data_only_loss = true;
    sim.run_until_done(30_000);
    sim.check_exact();
    assert!(sim.sides[1].events.iter().any(|e| matches!(e, Event::PathDown { path: 1, reason } if reason.contains("no data"))));
}

#[test]
fn a_path_with_heartbeats_but_no_data_raises_a_latent_error_in_permissive_mode() {
    let mut sim = Sim::new(Mode::Permissive, vec![tcp(2), tcp(2)], 31);
    sim.run_for(5);
    starve_data(&mut sim, 1);
    sim.data_only_loss = true;
    sim.run_until_done(30_000);
    sim.run_for(1_500);
    sim.check_exact();
    assert!(sim.sides[1].events.iter().any(|e| matches!(e, Event::LatentError { path: 1, .. })), "{:?}", sim.sides[1].events);
    assert!(sim.sides[1].m.is_live(1), "permissive keeps the path");
    let stats = sim.sides[1].m.path_stats(1).unwrap();
    assert_eq!(stats.latent_errors, 1);
}

/// Corrupt-frame counters and events of path `p`, both sides together.
fn corruption_seen(sim: &Sim, p: u32) -> (u64, usize) {
    let frames = sim.sides.iter().map(|s| s.m.path_stats(p).map_or(0, |st| st.corrupt_frames)).sum();
    let events = sim.sides.iter().flat_map(|s| &s.events).filter(|e| matches!(e, Event::Corrupt { path } if *path == p)).count();
    (frames, events)
}

fn no_mismatch(sim: &Sim) -> bool {
    !sim.sides.iter().flat_map(|s| &s.events).any(|e| matches!(e, Event::Mismatch { .. }))
}

#[test]
fn bit_flips_on_a_tcp_path_are_caught_by_the_crc_and_blamed_on_that_path() {
    for mode in [Mode::Strict, Mode::Permissive] {
        let mut specs = vec![tcp(2), tcp(3)];
        specs[1].bitflip = 0.01;
        let mut sim = Sim::new(mode, specs, 41);
        sim.auto_redial = Some(Duration::from_millis(20));
        sim.run_until_done(60_000);
        sim.run_for(100);
        // Nothing altered was delivered, the session did not fail (no
        // altered copy ever reached the comparison), and path 1 is blamed.
        sim.check_exact();
        assert!(sim.failed(0).is_none() && sim.failed(1).is_none(), "{mode:?}: {:?}", sim.failed(1));
        assert!(no_mismatch(&sim), "{mode:?}: an altered copy reached the comparison");
        let (frames, events) = corruption_seen(&sim, 1);
        assert!(frames > 0 && events as u64 == frames, "{mode:?}: {frames} corrupt frames, {events} events");
        assert_eq!(corruption_seen(&sim, 0), (0, 0), "{mode:?}: the clean path was blamed");
        let closed = sim.sides.iter().flat_map(|s| &s.events).any(
            |e| matches!(e, Event::PathDown { path: 1, reason } if reason.contains("corrupt frame") && reason.contains("untrustworthy")),
        );
        assert!(closed, "{mode:?}: the corrupting TCP path was not closed");
        let readmitted = sim.sides[1].events.iter().any(|e| matches!(e, Event::PathUp { path: 1, readmitted: true }));
        assert!(readmitted, "{mode:?}: the redialled path did not come back");
    }
}

#[test]
fn bit_flips_on_a_lossy_path_count_as_loss_and_retransmission_recovers() {
    for mode in [Mode::Strict, Mode::Permissive] {
        let mut specs = vec![lossy(5, 0.05), lossy(8, 0.05)];
        specs[0].bitflip = 0.01;
        let mut sim = Sim::new(mode, specs, 43);
        sim.auto_redial = Some(Duration::from_millis(50));
        sim.run_until_done(60_000);
        sim.check_exact();
        assert!(sim.failed(0).is_none() && sim.failed(1).is_none(), "{mode:?}");
        assert!(no_mismatch(&sim), "{mode:?}");
        let (frames, _) = corruption_seen(&sim, 0);
        assert!(frames > 0, "{mode:?}: no corrupt frame counted");
        assert_eq!(corruption_seen(&sim, 1), (0, 0), "{mode:?}: the clean path was blamed");
    }
}

#[test]
fn a_lossy_path_that_keeps_sending_corrupt_frames_is_dropped() {
    for mode in [Mode::Strict, Mode::Permissive] {
        let mut specs = vec![lossy(5, 0.0), lossy(5, 0.0)];
        specs[1].bitflip = 0.5;
        let mut sim = Sim::new(mode, specs, 47);
        sim.run_until_done(60_000);
        sim.check_exact();
        let dropped = sim.sides.iter().flat_map(|s| &s.events).any(
            |e| matches!(e, Event::PathDown { path: 1, reason } if reason.contains(&format!("{CORRUPT_LIMIT} corrupt frames"))),
        );
        assert!(dropped, "{mode:?}: the corrupting lossy path was kept");
        assert!(!sim.sides[1].m.is_live(1) || !sim.sides[0].m.is_live(1));
        assert_eq!(corruption_seen(&sim, 0), (0, 0));
    }
}

#[test]
fn a_single_tcp_path_with_bit_flips_delivers_exactly_after_readmissions() {
    let mut specs = vec![tcp(2)];
    specs[0].bitflip = 0.005;
    let mut sim = Sim::new(Mode::Strict, specs, 53);
    sim.auto_redial = Some(Duration::from_millis(10));
    sim.run_until_done(60_000);
    sim.check_exact();
    assert!(corruption_seen(&sim, 0).0 > 0);
}

// ----- CONTROL and cookies ---------------------------------------------

fn dialler_with_two_cookies(ttl_ms: u64) -> Sim {
    Sim::new(Mode::Strict, vec![tcp(5), tcp(5)], 80).with_dialer(&["c0", "c1"], Duration::from_millis(ttl_ms))
}

#[test]
fn a_dialler_refreshes_its_cookies_before_half_their_lifetime_and_the_grant_replaces_them() {
    let mut sim = dialler_with_two_cookies(2000);
    sim.run_for(900);
    assert_eq!((sim.cookie_requests, sim.sides[0].m.cookie_count()), (0, 2), "no request before half the lifetime");
    sim.run_for(200);
    assert_eq!(sim.cookie_requests, 1, "one request once half the lifetime passed");
    assert_eq!(sim.cookies_issued, 2, "the acceptor grants one cookie per path");
    // The grant replaced the whole set: the old cookies are gone.
    let held: Vec<Bytes> = std::iter::from_fn(|| sim.sides[0].m.take_cookie()).collect();
    assert_eq!(held, vec![Bytes::from("granted-0"), Bytes::from("granted-1")]);
    for c in held {
        sim.sides[0].m.give_back_cookie(c);
    }
    // The fresh set is good for another half lifetime (2 s here).
    sim.run_for(800);
    assert_eq!(sim.cookie_requests, 1, "no request while the fresh set is young");
    assert!(sim.failed(0).is_none() && sim.failed(1).is_none());
}

#[test]
fn a_dialler_short_of_cookies_asks_at_once_and_repeats_an_unanswered_request_every_two_seconds() {
    let mut sim = dialler_with_two_cookies(60_000);
    sim.grant_cookies = false;
    sim.run_for(100);
    assert_eq!(sim.cookie_requests, 0);
    let spent = sim.sides[0].m.take_cookie().expect("a cookie");
    assert_eq!(spent, Bytes::from("c0"));
    sim.sides[0].m.cookie_spent();
    sim.run_for(20);
    assert_eq!(sim.cookie_requests, 1, "a dialler short of one cookie per path asks at once");
    sim.run_for(1900);
    assert_eq!(sim.cookie_requests, 1, "not again within two seconds");
    sim.run_for(200);
    assert_eq!(sim.cookie_requests, 2, "an unanswered request is repeated");
    sim.grant_cookies = true;
    sim.run_for(2100);
    assert_eq!(sim.cookie_requests, 3);
    assert_eq!(sim.sides[0].m.cookie_count(), 2, "the grant restored one cookie per path");
}

#[test]
fn a_dialler_with_no_live_path_asks_for_nothing_until_a_path_returns() {
    let mut sim = dialler_with_two_cookies(60_000);
    sim.run_for(50);
    sim.close_link(0, "cut");
    sim.close_link(1, "cut");
    let _ = sim.sides[0].m.take_cookie();
    sim.sides[0].m.cookie_spent();
    sim.run_for(1000);
    assert_eq!(sim.cookie_requests, 0, "a request needs a live path to go on");
    sim.reopen_link(1);
    sim.run_for(50);
    assert_eq!(sim.cookie_requests, 1, "asked as soon as a path is live");
    assert_eq!(sim.sides[0].m.cookie_count(), 2);
}

#[test]
fn cookie_messages_for_the_other_side_and_undecodable_control_bodies_are_ignored() {
    let now = Instant::now();
    let mut acceptor = Machine::new(cfg(Mode::Strict), now);
    let mut dialler = Machine::dialer(cfg(Mode::Strict), now, vec![Bytes::from("c")], Duration::from_secs(60));
    for m in [&mut acceptor, &mut dialler] {
        m.add_path(0, true, now);
        m.on_frame(0, Frame::Control(Bytes::from_static(b"\xff\xff not protobuf")), now);
    }
    acceptor.on_frame(0, Frame::Control(control::cookie_grant(vec![Bytes::from("x")], Duration::from_secs(1))), now);
    dialler.on_frame(0, Frame::Control(control::cookie_request(4)), now);
    assert_eq!(acceptor.take_cookie(), None, "an acceptor holds no cookies");
    assert_eq!(dialler.poll_cookie_request(), None, "a dialler issues no cookies");
    assert_eq!(dialler.take_cookie(), Some(Bytes::from("c")), "the dialler's set is unchanged");
    for m in [&mut acceptor, &mut dialler] {
        assert!(m.failed().is_none());
        assert!(std::iter::from_fn(|| m.poll_event()).all(|e| matches!(e, Event::PathUp { .. })));
    }
    // A request is clamped to 1..=16.
    acceptor.on_frame(0, Frame::Control(control::cookie_request(99)), now);
    assert_eq!(acceptor.poll_cookie_request(), Some(16));
    acceptor.on_frame(0, Frame::Control(control::cookie_request(0)), now);
    assert_eq!(acceptor.poll_cookie_request(), Some(1));
}

/// Two machines joined by one in-order path that only moves when pumped.
fn pair(now: Instant) -> (Machine, Machine) {
    let (mut a, mut b) = (Machine::new(cfg(Mode::Strict), now), Machine::new(cfg(Mode::Strict), now));
    a.add_path(0, true, now);
    b.add_path(0, true, now);
    (a, b)
}

fn pump(from: &mut Machine, to: &mut Machine, now: Instant) {
    let mut buf = BytesMut::new();
    while from.poll_transmit(0, now, &mut buf, 1 << 20) {}
    while let Some(frame) = Frame::decode(&mut buf, 1 << 20).unwrap() {
        to.on_frame(0, frame, now);
    }
}

#[test]
fn a_close_from_the_peer_ends_the_session_after_what_was_deliverable_then() {
    let now = Instant::now();
    for (why, want) in [
        (SessionError::Closed, SessionError::PeerClosed("session closed locally".into())),
        (SessionError::Mismatch { offset: 3 }, SessionError::PeerMismatch(SessionError::Mismatch { offset: 3 }.to_string())),
    ] {
        let (mut a, mut b) = pair(now);
        a.push(Bytes::from_static(b"before the close"));
        pump(&mut a, &mut b, now);
        b.on_frame(0, Frame::Control(control::close(&why)), now);
        assert_eq!(b.failed(), Some(&want));
        assert_eq!(b.poll_end(now), Some(want.clone()));
        assert_eq!(b.take_delivered(usize::MAX), Some(Bytes::from_static(b"before the close")), "what was deliverable is read");
        assert_eq!(b.take_delivered(usize::MAX), None);
        assert_eq!(b.send_capacity(), 0, "nothing more is accepted");
        assert!(!b.wants_transmit(0, now), "nothing more is sent");
        assert_eq!(want.is_data_loss(), matches!(why, SessionError::Mismatch { .. }));
    }
    // The Close codes: 0 for a normal end, DATA_LOSS, ABORTED otherwise.
    let code = |e: &SessionError| {
        use prost::Message;
        let msg = crate::proto::resi::Control::decode(control::close(e)).unwrap().msg;
        match msg {
            Some(crate::proto::resi::control::Msg::Close(c)) => crate::grpc::Code::from_i32(c.reason.unwrap().code),
            other => panic!("not a Close: {other:?}"),
        }
    };
    use crate::grpc::Code;
    assert_eq!(code(&SessionError::Closed), Code::Ok);
    assert_eq!(code(&SessionError::Mismatch { offset: 1 }), Code::DataLoss);
    assert_eq!(code(&SessionError::PeerMismatch("x".into())), Code::DataLoss);
    assert_eq!(code(&SessionError::ResumeTimeout(Duration::from_secs(1))), Code::Aborted);
}

#[test]
fn a_session_ends_normally_once_both_directions_are_done_or_the_linger_passed() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    a.push(Bytes::from_static(b"request"));
    a.shutdown(now);
    assert_eq!(a.poll_end(now), None, "not before the peer acknowledged and finished");
    pump(&mut a, &mut b, now);
    assert_eq!(b.take_delivered(usize::MAX), Some(Bytes::from_static(b"request")));
    assert!(b.at_eof());
    b.push(Bytes::from_static(b"answer"));
    b.shutdown(now);
    pump(&mut b, &mut a, now);
    pump(&mut a, &mut b, now);
    assert_eq!(a.take_delivered(usize::MAX), Some(Bytes::from_static(b"answer")));
    assert_eq!(a.poll_end(now), Some(SessionError::Closed), "FIN sent and acknowledged, FIN received and read");
    assert_eq!(b.poll_end(now), None, "the peer has not yet acknowledged the answer");
    // The ending side's driver sends a Close with code 0: that ends the peer.
    b.on_frame(0, Frame::Control(control::close(&SessionError::Closed)), now);
    assert_eq!(b.poll_end(now), Some(SessionError::PeerClosed(SessionError::Closed.to_string())));
    assert!(std::iter::from_fn(|| a.poll_event()).all(|e| !matches!(e, Event::Failed(_))), "a normal end is no failure");

    // A peer that never acknowledges: the linger ends it.
    let (mut a, _b) = pair(now);
    a.push(Bytes::from_static(b"unheard"));
    a.shutdown(now);
    a.reader_closed();
    assert_eq!(a.poll_timeout().map(|t| t <= now + LINGER), Some(true), "the linger is a deadline");
    assert_eq!(a.poll_end(now + LINGER - Duration::from_millis(1)), None);
    assert_eq!(a.poll_end(now + LINGER), Some(SessionError::Closed));

    // The linger passed while the application still reads: the session
    // ends when it is done reading, and the passed linger is no deadline.
    let (mut a, mut b) = pair(now);
    b.push(Bytes::from_static(b"more to read"));
    b.shutdown(now);
    pump(&mut b, &mut a, now);
    a.push(Bytes::from_static(b"unheard"));
    a.shutdown(now);
    let later = now + LINGER;
    assert_eq!(a.poll_end(later), None, "the application has not read the peer's stream");
    assert_eq!(a.linger_until, None, "a passed linger is no deadline");
    assert_eq!(a.take_delivered(usize::MAX), Some(Bytes::from_static(b"more to read")));
    assert_eq!(a.poll_end(later), Some(SessionError::Closed));
}

#[test]
fn a_dialler_out_of_cookies_with_no_live_path_ends_the_session_at_once() {
    // The acceptor restarted: every path is gone and every cookie refused.
    let mut sim = dialler_with_two_cookies(60_000);
    sim.run_for(50);
    sim.close_link(0, "reset");
    sim.close_link(1, "reset");
    let a = &mut sim.sides[0].m;
    let first = a.take_cookie().expect("a cookie");
    a.give_back_cookie(first); // the dial never reached the peer
    let (c0, c1) = (a.take_cookie().unwrap(), a.take_cookie().unwrap());
    a.cookie_spent();
    assert!(a.failed().is_none(), "another attempt is still out and may bring a cookie back");
    drop((c0, c1));
    a.cookie_spent();
    assert_eq!(a.failed(), Some(&SessionError::OutOfCookies), "ends at once, not after the resume timeout");
    assert_eq!(a.poll_end(sim.now), Some(SessionError::OutOfCookies));

    // With a live path the same dialler just asks for fresh cookies.
    let mut sim = dialler_with_two_cookies(60_000);
    sim.grant_cookies = false;
    sim.run_for(50);
    sim.close_link(0, "reset");
    for _ in 0..2 {
        let _ = sim.sides[0].m.take_cookie().unwrap();
        sim.sides[0].m.cookie_spent();
    }
    assert!(sim.failed(0).is_none(), "a live path can still bring cookies");
    // Losing that path too, with the wallet empty, ends it.
    sim.close_link(1, "reset");
    assert_eq!(sim.failed(0), Some(&SessionError::OutOfCookies));
}

/// The frames `m` would send on path 0 at `now`.
fn transmit(m: &mut Machine, now: Instant) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    while m.poll_transmit(0, now, &mut buf, 1 << 20) {}
    std::iter::from_fn(|| Frame::decode(&mut buf, 1 << 20).unwrap()).collect()
}

#[test]
fn an_owed_ack_rides_with_the_answer_or_goes_alone_after_the_ack_delay() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    // The first heartbeats (and the new path's ACKs) go at once.
    pump(&mut a, &mut b, now);
    pump(&mut b, &mut a, now);
    let t = now + Duration::from_millis(5);
    a.push(Bytes::from_static(b"request"));
    pump(&mut a, &mut b, t);
    assert_eq!(b.take_delivered(usize::MAX), Some(Bytes::from_static(b"request")));
    assert!(transmit(&mut b, t).is_empty(), "no ACK alone before the ack delay");
    assert!(!b.wants_transmit(0, t));
    assert!(b.poll_timeout().is_some_and(|d| d <= t + ACK_DELAY), "the ack delay is a deadline");
    // The answer comes within the delay: the ACK goes with it.
    b.push(Bytes::from_static(b"answer"));
    let frames = transmit(&mut b, t);
    assert!(matches!(frames[0], Frame::Ack { path_received: 7, delivered: 7 }), "{frames:?}");
    assert!(matches!(&frames[1], Frame::Data { offset: 0, payload, .. } if &payload[..] == b"answer"));
    assert_eq!(frames.len(), 2);
    // With nothing to ride with, the ACK goes alone once the delay is over.
    for f in frames {
        a.on_frame(0, f, t);
    }
    assert_eq!(a.take_delivered(usize::MAX), Some(Bytes::from_static(b"answer")));
    assert!(transmit(&mut a, t + ACK_DELAY / 2).is_empty());
    let late = t + ACK_DELAY;
    assert!(a.wants_transmit(0, late));
    let frames = transmit(&mut a, late);
    assert!(matches!(frames[..], [Frame::Ack { path_received: 6, delivered: 6 }]), "{frames:?}");
    assert!(transmit(&mut a, late).is_empty(), "owed once, sent once");
}
