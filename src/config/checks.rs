//! Rules that span several keys, run on the deserialised configuration:
//! errors (a gateway needs somewhere to listen and an upstream; a path must
//! be declared dead only after several missed heartbeats; a listen address
//! cannot be bound twice) and warnings (a gateway that forwards to itself,
//! two paths over the same route, a listener open beyond loopback without
//! TLS).
//!
//! A rule about a key that already has an error is skipped: "missing" next
//! to "bad value" for the same key would only confuse.

use std::net::IpAddr;

use toml::Table;

use super::{fmt_duration, Config, Problems};

/// Every cross-key error of `c` to `p`; `given` is the file's table
/// (canonical names) to tell defaults from values written.
pub(super) fn errors(c: &Config, given: &Table, p: &mut Problems) {
    heartbeat_before_dead(c, given, p);
    listen_twice(c.listen(), "Tcp", p);
    if let Some(r) = &c.reverse {
        listen_twice(&r.listen, "Reverse", p);
    }
    gateway_needs(c, p);
}

fn heartbeat_before_dead(c: &Config, given: &Table, p: &mut Problems) {
    let r = &c.resi;
    if p.has("[Resi] DeadTimeout") || p.has("[Resi] HeartbeatInterval") || r.dead_timeout > r.heartbeat_interval {
        return;
    }
    let dead_given = given.get("Resi").and_then(|t| t.as_table()).is_some_and(|t| t.contains_key("DeadTimeout"));
    if dead_given {
        p.add(
            Some("[Resi] DeadTimeout".into()),
            format!(
                "{} must be longer than [Resi] HeartbeatInterval ({})",
                fmt_duration(r.dead_timeout),
                fmt_duration(r.heartbeat_interval)
            ),
        );
    } else {
        p.add(
            Some("[Resi] HeartbeatInterval".into()),
            format!(
                "{} must be shorter than [Resi] DeadTimeout ({}, the default; set DeadTimeout too)",
                fmt_duration(r.heartbeat_interval),
                fmt_duration(r.dead_timeout)
            ),
        );
    }
}

/// The same listen address twice cannot be bound (port 0 picks a new free
/// port each time, so it may repeat).
fn listen_twice(listen: &[String], section: &str, p: &mut Problems) {
    if p.has(&format!("[{section}] Listen")) {
        return;
    }
    for (i, a) in listen.iter().enumerate() {
        if !a.ends_with(":0") && listen[..i].contains(a) {
            p.add(Some(format!("[{section}] Listen[{i}]")), format!("{a:?} is listed twice"));
        }
    }
}

fn gateway_needs(c: &Config, p: &mut Problems) {
    if c.tcp.is_none() && c.nkn.is_none() {
        if !p.has("[Tcp]") && !p.has("[Nkn]") {
            p.add(None, "needs at least one of the sections [Tcp] and [Nkn]");
        }
        return;
    }
    let nkn_identity = c.nkn.as_ref().is_some_and(|n| n.seed.is_some());
    if c.listen().is_empty() && !nkn_identity && !p.has("[Tcp] Listen") && !p.has("[Nkn] Seed") {
        p.add(
            Some("[Tcp] Listen".into()),
            "missing: a gateway needs an address to listen on (or an NKN identity, [Nkn] Seed)",
        );
    }
    if c.upstream_tcp().is_empty() && c.upstream_nkn().is_none() && !p.has("[Tcp] Address") && !p.has("[Nkn] Address") {
        let key = if c.tcp.is_some() { "[Tcp] Address" } else { "[Nkn] Address" };
        p.add(
            Some(key.into()),
            "missing: a gateway needs an upstream to forward to ([Tcp] Address or [Nkn] Address)",
        );
    }
}

// ---------------------------------------------------------------------------
// Warnings

/// Everything suspicious about a valid configuration, one line each.
pub(super) fn warnings(c: &Config) -> Vec<String> {
    let mut out = plain_listeners(c);
    out.extend(forwards_to_itself(c));
    out.extend(duplicate_paths(c));
    out
}

fn plain_listeners(c: &Config) -> Vec<String> {
    if c.tls.as_ref().is_some_and(|t| t.listener.is_some()) {
        return Vec::new();
    }
    c.listen()
        .iter()
        .filter(|a| !is_loopback_listen(a))
        .map(|a| {
            format!(
                "[Tcp] Listen {a:?} is reachable beyond loopback without TLS ([Tls] Cert): \
                 ESI calls and RESI paths on it are neither encrypted nor authenticated"
            )
        })
        .collect()
}

/// Whether the host of `host:port` is a loopback address (`localhost`,
/// `127.0.0.0/8`, `::1`). Names other than `localhost` are not resolved and
/// count as not loopback.
pub fn is_loopback_listen(addr: &str) -> bool {
    matches!(Host::of(addr).0, Host::Loopback(_))
}

/// Where a `host:port` leads on this machine, as far as can be told
/// without resolving names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// `0.0.0.0` or `[::]`: every local address.
    Any,
    /// `localhost`, `127.0.0.0/8`, `[::1]`; `localhost` counts as
    /// `127.0.0.1` (it resolves to it, or to `::1`, which reaches the same
    /// dual listeners).
    Loopback(IpAddr),
    /// Another address, or a name in lower case.
    Other(String),
}

impl Host {
    fn of(addr: &str) -> (Host, &str) {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let kind = if host.eq_ignore_ascii_case("localhost") {
            Host::Loopback(IpAddr::from([127, 0, 0, 1]))
        } else {
            match host.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => Host::Any,
                Ok(ip) if ip.is_loopback() => Host::Loopback(ip),
                Ok(ip) => Host::Other(ip.to_string()),
                Err(_) => Host::Other(host.to_ascii_lowercase()),
            }
        };
        (kind, port)
    }

    /// The loopback addresses `localhost`, `127.0.0.1` and `::1` are one
    /// place; other loopback addresses only themselves.
    fn same_place(&self, other: &Host) -> bool {
        let main = |h: &Host| matches!(h, Host::Loopback(ip) if *ip == IpAddr::from([127, 0, 0, 1]) || *ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]));
        self == other || (main(self) && main(other))
    }
}

/// Whether dialling `upstream` reaches a socket listening on `listen`.
fn reaches(listen: &str, upstream: &str) -> bool {
    let ((l, lport), (u, uport)) = (Host::of(listen), Host::of(upstream));
    if lport != uport || lport == "0" {
        return false;
    }
    match l {
        Host::Any => matches!(u, Host::Any | Host::Loopback(_)),
        _ => l.same_place(&u) || (u == Host::Any && matches!(l, Host::Loopback(_))),
    }
}

/// `(key, address)` of every listen address, `[Tcp]` then `[Reverse]`.
fn listens(c: &Config) -> Vec<(&'static str, &String)> {
    let mut out: Vec<_> = c.listen().iter().map(|a| ("[Tcp] Listen", a)).collect();
    if let Some(r) = &c.reverse {
        out.extend(r.listen.iter().map(|a| ("[Reverse] Listen", a)));
    }
    out
}

/// `(key, address)` of every address dialled locally: the TCP upstream and
/// the reverse channel's local server.
fn dialled(c: &Config) -> Vec<(&'static str, &String)> {
    let mut out: Vec<_> = c.upstream_tcp().iter().map(|a| ("[Tcp] Address", a)).collect();
    if let Some(r) = &c.reverse {
        out.extend(r.address.iter().map(|a| ("[Reverse] Address", a)));
    }
    out
}

/// Dialled addresses that lead back to one of this gateway's own listen
/// addresses, and an `[Nkn] Address` that is its own NKN identity.
fn forwards_to_itself(c: &Config) -> Vec<String> {
    let listens = listens(c);
    let mut out = Vec::new();
    for (ukey, u) in dialled(c) {
        if let Some((lkey, l)) = listens.iter().find(|(_, l)| reaches(l, u)) {
            out.push(format!("{ukey} {u:?} is this gateway's own {lkey} {l:?}: it would forward calls to itself"));
        }
    }
    if let Some(n) = &c.nkn {
        if let (Some(addr), Some(own)) = (&n.address, own_nkn_address(n.seed.as_deref())) {
            if addr.eq_ignore_ascii_case(&own) {
                out.push(format!(
                    "[Nkn] Address {addr:?} is this gateway's own NKN identity ([Nkn] Seed): it would forward calls to itself"
                ));
            }
        }
    }
    out
}

fn own_nkn_address(seed: Option<&str>) -> Option<String> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(seed?, &mut bytes).ok()?;
    Some(crate::nkn::Identity::from_seed(bytes).public_key_hex())
}

/// Two `[Tcp] Address` entries to the same place (two paths over one
/// route add no redundancy), or two listen addresses that overlap.
fn duplicate_paths(c: &Config) -> Vec<String> {
    let paths: Vec<_> = c.upstream_tcp().iter().map(|a| ("[Tcp] Address", a)).collect();
    let same_path = |a: &str, b: &str| {
        let ((ha, pa), (hb, pb)) = (Host::of(a), Host::of(b));
        pa == pb && ha.same_place(&hb)
    };
    let mut out = same_twice(&paths, same_path, "two paths over the same route add no redundancy");
    let overlap = |a: &str, b: &str| !a.ends_with(":0") && (a == b || reaches(a, b) || reaches(b, a));
    out.extend(same_twice(&listens(c), overlap, "both cannot be bound"));
    out
}

fn same_twice(entries: &[(&str, &String)], same: impl Fn(&str, &str) -> bool, why: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (key, a)) in entries.iter().enumerate() {
        if let Some((prev_key, b)) = entries[..i].iter().find(|(_, b)| same(b, a)) {
            out.push(format!("{key} {a:?} is the same address as {prev_key} {b:?}: {why}"));
        }
    }
    out
}
