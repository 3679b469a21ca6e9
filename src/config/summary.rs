//! The human-readable summary of a loaded configuration: what `resi
//! check-config` prints (and the fuzz harness renders for every input that
//! loads).

use std::path::PathBuf;

use super::{fmt_duration, fmt_size, mode_name, Config};
use crate::tls::TlsSettings;

impl Config {
    /// A human-readable summary (what `resi check-config` prints).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let origin = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        s.push_str(&format!("{origin}: OK\n"));
        if let Some(t) = &self.tcp {
            s.push_str(&format!("  [Tcp]  listen: {}\n", list_or_none(&t.listen)));
            s.push_str(&format!("         upstream: {}", list_or_none(&t.address)));
            if t.address.len() > 1 {
                s.push_str(&format!(" ({} paths)", t.address.len()));
            }
            s.push('\n');
        }
        if let Some(n) = &self.nkn {
            s.push_str(&format!(
                "  [Nkn]  upstream: {}, identity: {}, subclients: {}\n",
                n.address.as_deref().unwrap_or("(none)"),
                if n.seed.is_some() {
                    "seed given"
                } else {
                    "(none)"
                },
                n.subclients
            ));
            if !n.allowed_peers.is_empty() {
                s.push_str(&format!("         allowed peers: {}\n", n.allowed_peers.join(", ")));
            }
        }
        if let Some(t) = &self.tls {
            s.push_str(&tls_summary(t));
        }
        let r = &self.resi;
        s.push_str(&format!(
            "  [Resi] name: {}, mode: {}, heartbeat: {}, dead timeout: {}, redial max backoff: {}\n",
            r.name,
            mode_name(r.mode),
            fmt_duration(r.heartbeat_interval),
            fmt_duration(r.dead_timeout),
            fmt_duration(r.redial_max_backoff)
        ));
        s.push_str(&format!(
            "         resume timeout: {}, cookie ttl: {}, connect timeout: {}, shutdown grace: {}\n",
            fmt_duration(r.resume_timeout),
            fmt_duration(r.cookie_ttl),
            fmt_duration(r.connect_timeout),
            fmt_duration(r.shutdown_grace)
        ));
        s.push_str(&format!(
            "         max message size: {}, send window: {}\n",
            fmt_size(r.max_message_size),
            fmt_size(r.send_window)
        ));
        if let Some(rv) = &self.reverse {
            s.push_str(&format!("  [Reverse] listen: {}\n", list_or_none(&rv.listen)));
            s.push_str(&format!("            local server: {}\n", list_or_none(&rv.address)));
        }
        s.push_str(&format!(
            "         handshake timeout: {}, idle timeout: {}, max connections: {}, threads: {}, busy poll: {}\n",
            fmt_duration(r.handshake_timeout),
            fmt_duration(r.idle_timeout),
            r.max_connections,
            r.threads,
            busy_poll_summary(r)
        ));
        if let Some(m) = &self.metrics {
            s.push_str(&format!("  [Metrics] listen: http://{}/metrics\n", m.listen));
        }
        s
    }
}

/// `BusyPoll` as it takes effect: only on the one-thread runtime.
fn busy_poll_summary(r: &super::ResiConfig) -> String {
    match (r.busy_poll.is_zero(), r.threads) {
        (true, _) => "off".into(),
        (false, 1) => fmt_duration(r.busy_poll),
        (false, _) => format!("{} (not used: Threads > 1)", fmt_duration(r.busy_poll)),
    }
}

fn tls_summary(t: &TlsSettings) -> String {
    let f = &t.files;
    let name = |p: &Option<PathBuf>| p.as_ref().map_or("(none)".to_string(), |p| p.display().to_string());
    let listener = match (&t.listener, &f.client_ca) {
        (None, _) => "plain".to_string(),
        (Some(_), None) => format!("TLS 1.3 (cert {})", name(&f.cert)),
        (Some(_), Some(ca)) => format!("mutual TLS 1.3 (cert {}, client CA {})", name(&f.cert), ca.display()),
    };
    let upstream = match &t.upstream {
        None => "plain".to_string(),
        Some(_) => format!(
            "TLS 1.3 (CA {}, server name {}{})",
            name(&f.upstream_ca),
            f.server_name.as_deref().unwrap_or("= host of each address"),
            if f.cert.is_some() { ", client certificate" } else { "" }
        ),
    };
    format!("  [Tls]  listener: {listener}\n         upstream: {upstream}\n")
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}
