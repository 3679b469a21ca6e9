//! Fuzz harnesses: one function per decoder that reads bytes from the
//! network or a file.
//!
//! They live in the library (not in `fuzz/`) so that a plain `cargo test`
//! replays the committed corpora through exactly the code the fuzzer ran
//! (`tests/fuzz_corpus.rs`), and so that they may reach crate-internal
//! decoders. Each function takes arbitrary bytes, drives one decoder the way
//! the gateway does, and panics only when an invariant breaks: decoders
//! must refuse bad input with an error, never panic, and what they accept
//! must encode back to what they decoded. `fuzz/README.md` tells how to run
//! them under libFuzzer on the stable toolchain.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::frame::{Frame, FrameError};
use crate::grpc::{self, Code, DecodeError, Decoder, MessageTooLarge, MessageTracker, Prefix};
use crate::nkn::{client as nkn_client, crypto, node, payload, wire};
use crate::proto::{esi, resi, REDUNDANCY_EXTENSION_ID};
use crate::session::registry::SessionRegistry;

/// One harness: arbitrary bytes in, a panic only on a broken invariant.
pub type Harness = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/*.rs` and the corpus replay
/// use them (the corpus of target `x` is `fuzz/corpus/x/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("path_frames", path_frames),
    ("modify", modify),
    ("grpc_framing", grpc_framing),
    ("nkn_messages", nkn_messages),
    ("nkn_node", nkn_node),
    ("config", config),
];

/// Splits `data` into a control byte and the rest (empty input: zero).
fn split_control(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((c, rest)) => (*c, rest),
        None => (0, data),
    }
}

/// Path frames as a path reader sees them: bytes arriving in chunks of a
/// size chosen by the first input byte, decoded after each chunk with a
/// frame limit also chosen by it. Every decoded frame must re-encode to the
/// bytes it came from (unknown ignorable frames excepted: they are
/// skipped), and an error must leave nothing half-consumed that a later
/// call could misread (the reader drops the path on error anyway; here
/// decoding simply stops).
pub fn path_frames(data: &[u8]) {
    let (control, bytes) = split_control(data);
    let chunk = usize::from(control & 0x0f) + 1;
    let max_frame = [16usize, 64, 1024, 1 << 20][usize::from(control >> 4) & 3];
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match Frame::decode(&mut buf, max_frame) {
                Ok(Some(frame)) => {
                    assert!(frame.encoded_len() <= before - buf.len(), "decoded more than was consumed");
                    let mut again = BytesMut::new();
                    frame.encode(&mut again);
                    assert_eq!(again.len(), frame.encoded_len());
                    assert_eq!(Frame::decode(&mut again, usize::MAX).unwrap(), Some(frame));
                    assert!(again.is_empty());
                }
                Ok(None) => {
                    assert!(buf.len() <= before, "a partial frame grew the buffer");
                    break;
                }
                Err(FrameError::TooLarge { len, max }) => {
                    assert!(len > max);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// A hop's registry of accepted sessions, shared by every run of the
/// `modify` target (opening sessions needs a runtime; the sessions it opens
/// wait for paths that never come and end on their own).
fn hop() -> &'static (tokio::runtime::Runtime, Arc<SessionRegistry>, crate::extension::ExtensionRegistry) {
    static HOP: OnceLock<(tokio::runtime::Runtime, Arc<SessionRegistry>, crate::extension::ExtensionRegistry)> =
        OnceLock::new();
    HOP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let (registry, mut new_sessions) = {
            let _guard = rt.enter();
            SessionRegistry::new(crate::session::SessionConfig::default())
        };
        rt.spawn(async move { while new_sessions.recv().await.is_some() {} });
        let extensions = crate::extension::ExtensionRegistry::with_builtins(registry.clone(), "fuzz".into());
        (rt, registry, extensions)
    })
}

/// `Modify` and the redundancy extension as a hop handles them: the bytes
/// as the body of a `Modify` call (gRPC prefix, `esi.ModifyRequest`,
/// dispatch to the built-in extension, whose `resi.Redundancy` decoding
/// answers `Open`), and the same bytes as the body of a HELLO frame on a
/// RESI path (`SessionRegistry::answer_hello`). Both must answer with a
/// status or a well-formed reply, never an internal error.
pub fn modify(data: &[u8]) {
    let (rt, registry, extensions) = hop();
    let _guard = rt.enter();
    let (control, bytes) = split_control(data);
    let body = if control & 1 == 0 { grpc::frame_bytes(bytes) } else { Bytes::copy_from_slice(bytes) };
    if let Ok(msg) = grpc::decode_unary_frame(body) {
        if let Ok(esi::ModifyRequest { ext: Some(ext) }) = esi::ModifyRequest::decode(msg) {
            if let Some(handler) = extensions.get(ext.id) {
                let id = ext.id;
                let answer = rt.block_on(crate::extension::run_handler(handler, ext));
                match answer {
                    Ok(data) if id == REDUNDANCY_EXTENSION_ID => {
                        let rsp = resi::Redundancy::decode(data).expect("the hop's own answer decodes");
                        assert!(matches!(rsp.msg, Some(resi::redundancy::Msg::Opened(_))));
                    }
                    Ok(_) => {}
                    Err(st) => assert_ne!(st.code, Code::Internal, "{st}"),
                }
            }
        }
    }
    let (reply, joined) = registry.answer_hello(Bytes::copy_from_slice(bytes), &crate::tls::ChannelBinding::default(), None);
    let reply = resi::HelloReply::decode(reply).expect("the hop's own HELLO_REPLY decodes");
    match reply.result {
        Some(resi::hello_reply::Result::Response(_)) => assert!(joined.is_some()),
        Some(resi::hello_reply::Result::Error(st)) => {
            assert!(joined.is_none());
            assert_ne!(st.code, Code::Internal as i32, "{}", st.message);
        }
        None => panic!("HELLO_REPLY without a result"),
    }
    if registry.session_count() > 64 {
        registry.close_all();
    }
}

/// The gateway's gRPC framing: the streaming [`MessageTracker`] (fed in
/// chunks of a size chosen by the first byte, with a limit chosen by the
/// second) must agree with a plain parse of the whole body by
/// [`Prefix::peek`], and [`grpc::decode_unary_frame`] must accept exactly
/// one whole message.
pub fn grpc_framing(data: &[u8]) {
    let (control, rest) = split_control(data);
    let (limit_byte, body) = split_control(rest);
    let chunk = usize::from(control) + 1;
    let max = usize::from(limit_byte) * 4;

    // Reference: walk the whole body.
    let mut at = 0;
    let mut expect_messages = 0u64;
    let mut expect_err = None;
    let mut err_at = 0;
    while let Some(p) = Prefix::peek(&body[at..]) {
        if p.len > max {
            expect_err = Some(MessageTooLarge { len: p.len, max });
            err_at = at;
            break;
        }
        expect_messages += 1;
        at += grpc::FRAME_HEADER_LEN;
        if body.len() - at < p.len {
            at = body.len() + 1; // ends inside a message
            break;
        }
        at += p.len;
    }
    let expect_partial = expect_err.is_none() && at != body.len();

    let mut tracker = MessageTracker::new(max);
    let mut got_err = None;
    let mut fed = 0;
    for piece in body.chunks(chunk) {
        if let Err(refused) = tracker.feed(piece) {
            // The valid bytes are those of this chunk before the refused prefix.
            assert_eq!(refused.valid, err_at.saturating_sub(fed));
            got_err = Some(refused.error);
            break;
        }
        fed += piece.len();
    }
    assert_eq!(got_err, expect_err);
    if got_err.is_none() {
        assert_eq!(tracker.messages(), expect_messages);
        assert_eq!(tracker.in_message(), expect_partial);
    }

    decoder_agrees(body, chunk, max);

    let unary = grpc::decode_unary_frame(Bytes::copy_from_slice(body));
    match Prefix::peek(body) {
        Some(p) if !p.compressed && body.len() == grpc::FRAME_HEADER_LEN + p.len => {
            assert_eq!(unary.unwrap(), &body[grpc::FRAME_HEADER_LEN..]);
        }
        _ => assert!(unary.is_err()),
    }
}

/// The buffering [`Decoder`], fed `body` in chunks of `chunk` bytes, yields
/// the messages a plain walk finds, then the walk's verdict on the rest.
fn decoder_agrees(body: &[u8], chunk: usize, max: usize) {
    let mut want = Vec::new();
    let mut at = 0;
    let verdict = loop {
        let Some(p) = Prefix::peek(&body[at..]) else {
            break if at == body.len() { None } else { Some(DecodeError::Truncated { have: body.len() - at }) };
        };
        if p.compressed {
            break Some(DecodeError::Compressed);
        }
        if p.len > max {
            break Some(DecodeError::TooLarge(MessageTooLarge { len: p.len, max }));
        }
        let start = at + grpc::FRAME_HEADER_LEN;
        if body.len() - start < p.len {
            break Some(DecodeError::Truncated { have: body.len() - at });
        }
        want.push(&body[start..start + p.len]);
        at = start + p.len;
    };
    let mut decoder = Decoder::new(max);
    let mut got = Vec::new();
    let mut refused = None;
    'feed: for piece in body.chunks(chunk) {
        decoder.push(Bytes::copy_from_slice(piece));
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(e) => {
                    refused = Some(e);
                    break 'feed;
                }
            }
        }
    }
    let refused = refused.or_else(|| decoder.finish().err());
    assert_eq!(got, want);
    assert_eq!(refused, verdict);
}

fn fuzz_identity() -> &'static crate::nkn::Identity {
    static ID: OnceLock<crate::nkn::Identity> = OnceLock::new();
    ID.get_or_init(|| crate::nkn::Identity::from_seed([7; 32]))
}

/// NKN wire messages and payloads as a client decodes what its node sends:
/// `ClientMessage` framing (with zlib), `InboundMessage`, envelopes opened
/// with a fixed key, payloads and their data, `OutboundMessage` as a node
/// parses it, receipts, and the node's JSON control messages.
pub fn nkn_messages(data: &[u8]) {
    if let Ok((ty, inner)) = wire::decode_client_message(data) {
        assert!(inner.len() <= 4 * 1024 * 1024 + data.len());
        let again = wire::encode_client_message(ty, &inner, false).expect("uncompressed encoding");
        assert_eq!(wire::decode_client_message(&again).expect("own encoding decodes"), (ty, inner));
    }
    if let Ok(msg) = wire::parse_inbound(data) {
        let key = [9u8; 32];
        let _ = nkn_client::process_inbound(&msg, true, |_| Ok(key));
        let _ = nkn_client::process_inbound(&msg, false, |_| Err(crate::nkn::NknError::Malformed("no key")));
    }
    if let Ok(env) = crypto::decode_envelope(data) {
        let _ = crypto::open_envelope(&env, true, || Ok([3u8; 32]));
    }
    if let Ok(p) = payload::decode(data) {
        let _ = payload::data_of(&p);
        let _ = payload::is_response(&p);
        assert_eq!(payload::decode(&payload::encode(&p)).expect("own encoding decodes"), p);
    }
    if let Ok(m) = crate::proto::nkn::OutboundMessage::decode(data) {
        if let Ok(parsed) = wire::ParsedOutbound::from_message(m) {
            assert_eq!(parsed.dests.len(), parsed.payloads.len());
            assert_eq!(parsed.dests.len(), parsed.signatures.len());
            let _ = parsed.verify("fuzz.0000000000000000000000000000000000000000000000000000000000000000", &[1; 32]);
        }
    }
    if let Ok(r) = crate::proto::nkn::Receipt::decode(data) {
        let _ = wire::verify_receipt(&fuzz_identity().public_key(), &r);
    }
    let _ = wire::zlib_decompress(data, 1 << 16).map(|out| assert!(out.len() <= 1 << 16));
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(j) = serde_json::from_str::<wire::NodeJson>(text) {
            let _ = serde_json::from_value::<wire::NodeInfo>(j.result.clone()).map(|n| n.public_key());
            let _ = j.to_json();
        }
    }
}

/// The embedded NKN node's handling of what a client sends: a session is
/// connected and (unauthenticated) registered, then the bytes are its next
/// frame, text (JSON) when the first byte is even, binary otherwise, and
/// then an RPC request body. Malformed input must be refused, not panic.
pub fn nkn_node(data: &[u8]) {
    let (control, bytes) = split_control(data);
    let cfg = node::NodeConfig { require_client_auth: false, seed: Some([5; 32]), ..Default::default() };
    let mut relay = node::Relay::new(cfg, "127.0.0.1:1".into(), "127.0.0.1:2".into());
    let now = Instant::now();
    let (sid, _) = relay.connect([1; 32]);
    let addr = fuzz_identity().address("fuzz");
    let set = serde_json::json!({"Action": "setClient", "Addr": addr}).to_string();
    relay.on_text(sid, &set, now).expect("setClient is well-formed");
    if control & 1 == 0 {
        let _ = relay.on_text(sid, &String::from_utf8_lossy(bytes), now);
    } else {
        let _ = relay.on_binary(sid, Bytes::copy_from_slice(bytes), now);
    }
    let _ = relay.rpc(bytes);
    relay.expire(now + Duration::from_secs(7200));
    relay.disconnect(sid);
}

/// The configuration file: TOML text (invalid UTF-8 replaced, as a file
/// read would refuse it earlier). A config that loads must describe itself,
/// list its warnings and give a session config; one that fails must name its origin.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match crate::config::Config::from_toml_str(&text, "fuzz.toml") {
        Ok(cfg) => {
            let _ = cfg.summary();
            let _ = cfg.warnings();
            let _ = cfg.session_config();
            let _ = (cfg.listen(), cfg.upstream_tcp(), cfg.upstream_nkn());
        }
        Err(e) => {
            assert_eq!(e.origin(), "fuzz.toml");
            let _ = (e.to_string(), e.key());
        }
    }
}
