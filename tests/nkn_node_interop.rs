//! The official NKN JavaScript SDK (`nkn-sdk`, pinned in
//! `tests/nkn_interop/package.json`) against resi's embedded local NKN node.
//!
//! Each test starts a [`LocalNode`] on port 0, runs one script of
//! `tests/nkn_interop/` with Node.js (`node <script>.js <rpc addr>`), and
//! checks its exit status and the node's counters. The scripts use only
//! `rpcServerAddr: "http://127.0.0.1:<port>"` and the SDK's defaults.
//!
//! Needs `node` on PATH and a one-time `npm ci` (or `npm install`) in
//! `tests/nkn_interop`; without them these tests fail and say so.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use resi::nkn::node::{LocalNode, NodeConfig, NodeStats};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("nkn_interop")
}

/// Runs `node <script> <rpc addr>` against a fresh node; returns the node's
/// counters after the script exited 0 (panics with its output otherwise).
async fn run_script(script: &str) -> NodeStats {
    let dir = interop_dir();
    assert!(
        dir.join("node_modules").join("nkn-sdk").join("package.json").is_file(),
        "nkn-sdk is not installed: run `npm ci` (or `npm install`) in {} first",
        dir.display()
    );
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let child = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .arg(node.rpc_addr().to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 18+ must be on PATH): {e}"));
    let out = tokio::time::timeout(Duration::from_secs(150), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 150 s"))
        .unwrap();
    let stats = node.stats();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- {script} stdout\n{stdout}--- {script} stderr\n{stderr}--- node stats\n{stats:#?}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("PASS"), "{script} did not report PASS");
    node.shutdown().await;
    stats
}

/// What every script must leave behind: only valid signatures, receipts and
/// frames; nothing refused.
fn assert_clean(s: &NodeStats) {
    assert_eq!(s.bad_signatures, 0, "{s:?}");
    assert_eq!(s.bad_receipts, 0, "{s:?}");
    assert_eq!(s.malformed_frames, 0, "{s:?}");
    assert_eq!(s.invalid_messages, 0, "{s:?}");
    assert_eq!(s.invalid_destinations, 0, "{s:?}");
    assert_eq!(s.set_client_failed, 0, "{s:?}");
    assert_eq!(s.rejected_before_set_client, 0, "{s:?}");
    assert_eq!(s.dropped_queue_full, 0, "{s:?}");
    // Every relayed message carried a prev_hash and was answered by a receipt
    // (a receipt can still be in flight when the script exits).
    assert!(s.receipts > 0 && s.receipts <= s.relayed, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_exchange_binary_text_and_replies() {
    let s = run_script("clients.js").await;
    assert_clean(&s);
    // 3 clients; 7 requests + 7 replies/ACKs, multicast 2 + up to 2 answers.
    assert!(s.set_client_ok >= 3, "{s:?}");
    assert!(s.relayed >= 14, "{s:?}");
    assert_eq!(s.dropped_offline, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_multiclients_exchange_messages_once_with_replies() {
    let s = run_script("multiclient.js").await;
    assert_clean(&s);
    assert!(s.set_client_ok >= 8, "all 8 sub-clients set up: {s:?}");
    // 7 sends × 4 sub-clients, plus replies (4 per reply) and ACKs.
    assert!(s.relayed >= 7 * 4 + 6 * 4, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_carry_a_multi_megabyte_payload() {
    let s = run_script("large.js").await;
    assert_clean(&s);
    assert!(s.relayed >= 2, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_message_held_for_offline_destination() {
    let s = run_script("holding.js").await;
    assert_clean(&s);
    assert_eq!(s.dropped_offline, 1, "the unheld message: {s:?}");
    assert_eq!((s.held, s.held_delivered, s.held_expired), (1, 1, 0), "{s:?}");
}

/// resi's Rust [`resi::nkn::Client`] and an SDK Client exchange encrypted
/// binary and text messages with replies, both ways, through the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_and_sdk_client_exchange_both_ways() {
    use bytes::Bytes;
    use resi::nkn::{Client, ClientConfig, Identity, SendOptions};
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = interop_dir();
    assert!(
        dir.join("node_modules").join("nkn-sdk").join("package.json").is_file(),
        "nkn-sdk is not installed: run `npm ci` (or `npm install`) in {} first",
        dir.display()
    );
    let node = LocalNode::start(NodeConfig::default()).await.unwrap();
    let cfg = ClientConfig {
        identifier: "rust".into(),
        seed_rpc_servers: vec![node.rpc_url()],
        ..Default::default()
    };
    let (rust, mut rust_rx) = Client::new(Identity::generate(), cfg);
    rust.wait_ready(Duration::from_secs(10)).await.unwrap();
    let rust = std::sync::Arc::new(rust);

    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("rust_peer.js"))
        .arg(node.rpc_addr().to_string())
        .arg(rust.address())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 18+ must be on PATH): {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut s).await;
        s
    });

    // The Rust side answers whatever the SDK client sends.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answerer = {
        let (rust, answered) = (rust.clone(), answered.clone());
        tokio::spawn(async move {
            while let Some(m) = rust_rx.recv().await {
                assert!(m.encrypted, "{m:?}");
                if m.is_text {
                    let t = format!("rust: {}", std::str::from_utf8(&m.data).unwrap());
                    rust.reply_text(&m, &t).await.unwrap();
                } else {
                    let rev: Vec<u8> = m.data.iter().rev().copied().collect();
                    rust.reply(&m, Some(rev.into())).await.unwrap();
                }
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };

    let run = async {
        let mut out = String::new();
        let js_addr = loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("rust_peer.js ended before printing ADDR");
            out.push_str(&line);
            out.push('\n');
            if let Some(a) = line.strip_prefix("ADDR ") {
                break a.to_string();
            }
        };
        let wait = Duration::from_secs(15);
        let r = rust
            .send_and_wait_reply(
                &[&js_addr],
                Bytes::from_static(&[9, 8, 7, 0]),
                SendOptions::default(),
                wait,
            )
            .await
            .unwrap();
        assert_eq!(r.src, js_addr);
        assert_eq!(r.data.as_deref(), Some(&[0u8, 7, 8, 9][..]));
        assert!(!r.is_text);
        let text = SendOptions {
            text: true,
            ..Default::default()
        };
        let r = rust
            .send_and_wait_reply(&[&js_addr], Bytes::from_static(b"hello from rust"), text, wait)
            .await
            .unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"js: hello from rust"[..]));
        assert!(r.is_text);
        while let Some(line) = lines.next_line().await.unwrap() {
            out.push_str(&line);
            out.push('\n');
        }
        let status = child.wait().await.unwrap();
        (status, out)
    };
    let (status, out) = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("rust_peer timed out");
    let err = stderr_task.await.unwrap();
    let s = node.stats();
    println!("--- rust_peer.js stdout\n{out}--- stderr\n{err}--- node stats\n{s:#?}");
    assert!(
        status.success() && out.contains("PASS rust_peer"),
        "rust_peer.js failed ({status}):\n{out}\n{err}"
    );
    rust.close();
    answerer.abort();
    assert_eq!(
        answered.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the Rust client answered the SDK's two requests"
    );
    assert_clean(&s);
    // 2 requests + 2 replies each way.
    assert!(s.relayed >= 8, "{s:?}");
    node.shutdown().await;
}
