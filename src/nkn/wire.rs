//! What travels on the WebSocket between a client and its node: NKN
//! serialization (§7.1), signatures (§7.2, §7.3, §3.2), `ClientMessage`
//! frames (§4) and the JSON control messages (§3.2–§3.4).
//!
//! Everything here is pure and shared by the client and the local node:
//! builders for what a client sends, parsers and verifiers for what a node
//! receives, and the other way round.

use std::io::{Read, Write};

use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::{self, client_id, Address, Identity};
use super::{NknError, Result, MAX_NODE_MESSAGE};
use crate::proto::nkn::{ClientMessage, ClientMessageType, CompressionType, InboundMessage, OutboundMessage, Receipt};

// ---------------------------------------------------------------------------
// NKN serialization (§7.1)

/// Appends a little-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a `Bool` (`00` / `01`).
pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(v as u8);
}

/// Appends a `VarUint`.
pub fn put_var_uint(out: &mut Vec<u8>, n: u64) {
    if n < 0xfd {
        out.push(n as u8);
    } else if n <= 0xffff {
        out.push(0xfd);
        out.extend_from_slice(&(n as u16).to_le_bytes());
    } else if n <= 0xffff_ffff {
        out.push(0xfe);
        out.extend_from_slice(&(n as u32).to_le_bytes());
    } else {
        out.push(0xff);
        out.extend_from_slice(&n.to_le_bytes());
    }
}

/// Appends `VarBytes(b)` = `VarUint(len) || b`.
pub fn put_var_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_var_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

// ---------------------------------------------------------------------------
// Outbound signature (§7.2)

/// The inputs of the signature over one destination of an outbound message.
#[derive(Clone, Debug)]
pub struct SigChainInputs<'a> {
    /// The outbound `nonce`.
    pub nonce: u32,
    /// Length of the payload bytes going to this destination.
    pub data_size: u32,
    /// The `sigChainBlockHash` bytes (possibly empty).
    pub block_hash: &'a [u8],
    /// `sha256(src address)`.
    pub src_id: [u8; 32],
    /// Sender public key.
    pub src_pubkey: [u8; 32],
    /// `sha256(dest address)`.
    pub dest_id: [u8; 32],
    /// Destination public key.
    pub dest_pubkey: [u8; 32],
    /// Public key of the node the sender is connected to.
    pub node_pubkey: [u8; 32],
}

impl SigChainInputs<'_> {
    /// The sig-chain metadata serialization.
    pub fn metadata(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(8 + 5 * 33);
        put_u32(&mut m, self.nonce);
        put_u32(&mut m, self.data_size);
        put_var_bytes(&mut m, self.block_hash);
        put_var_bytes(&mut m, &self.src_id);
        put_var_bytes(&mut m, &self.src_pubkey);
        put_var_bytes(&mut m, &self.dest_id);
        put_var_bytes(&mut m, &self.dest_pubkey);
        m
    }

    /// The unsigned first element: `VarBytes(empty id) || VarBytes(node
    /// pubkey) || Bool(false)`.
    pub fn elem(&self) -> Vec<u8> {
        let mut e = Vec::with_capacity(35);
        put_var_bytes(&mut e, &[]);
        put_var_bytes(&mut e, &self.node_pubkey);
        put_bool(&mut e, false);
        e
    }

    /// `sha256(sha256(metadata) || elem)`: the message that is signed.
    pub fn digest(&self) -> [u8; 32] {
        sha256(&[&sha256(&[&self.metadata()]), &self.elem()])
    }
}

/// Parses a destination string and returns `(sha256(d), pubkey)`.
fn dest_keys(dest: &str) -> Result<([u8; 32], [u8; 32])> {
    let a = Address::parse(dest)?;
    Ok((client_id(dest), a.public_key))
}

/// Verifies the signature for one destination of an outbound message sent
/// by `src` (the sender's `setClient` address) through the node `node_pubkey`.
#[allow(clippy::too_many_arguments)]
pub fn verify_outbound_signature(
    src: &str,
    dest: &str,
    node_pubkey: &[u8; 32],
    block_hash: &[u8],
    nonce: u32,
    data_size: u32,
    signature: &[u8],
) -> bool {
    let (Ok(s), Ok((dest_id, dest_pubkey))) = (Address::parse(src), dest_keys(dest)) else { return false };
    let inputs = SigChainInputs {
        nonce,
        data_size,
        block_hash,
        src_id: client_id(src),
        src_pubkey: s.public_key,
        dest_id,
        dest_pubkey,
        node_pubkey: *node_pubkey,
    };
    identity::verify(&s.public_key, &inputs.digest(), signature)
}

/// What a client needs to build an outbound message.
#[derive(Clone, Debug)]
pub struct Outbound<'a> {
    /// The sender's own address (as given in `setClient`).
    pub src: &'a str,
    /// Destination addresses (canonical strings).
    pub dests: &'a [String],
    /// One shared payload, or one per destination (serialized envelopes).
    pub payloads: Vec<Bytes>,
    /// The connected node's public key.
    pub node_pubkey: [u8; 32],
    /// Current `sigChainBlockHash` (possibly empty).
    pub block_hash: Bytes,
    /// The sig-chain nonce.
    pub nonce: u32,
    /// `max_holding_seconds`.
    pub max_holding_seconds: u32,
}

/// Builds a whole OUTBOUND_MESSAGE `ClientMessage` frame with one signature
/// per destination; zlib-compressed when it carries more than one payload.
pub fn build_outbound(identity: &Identity, o: Outbound<'_>) -> Result<Bytes> {
    if o.dests.is_empty() {
        return Err(NknError::Malformed("no destination"));
    }
    if o.payloads.len() != 1 && o.payloads.len() != o.dests.len() {
        return Err(NknError::Malformed("payload count"));
    }
    let src_id = client_id(o.src);
    let mut signatures = Vec::with_capacity(o.dests.len());
    for (i, d) in o.dests.iter().enumerate() {
        let (dest_id, dest_pubkey) = dest_keys(d)?;
        let payload = if o.payloads.len() == 1 { &o.payloads[0] } else { &o.payloads[i] };
        let inputs = SigChainInputs {
            nonce: o.nonce,
            data_size: payload.len() as u32,
            block_hash: &o.block_hash,
            src_id,
            src_pubkey: identity.public_key(),
            dest_id,
            dest_pubkey,
            node_pubkey: o.node_pubkey,
        };
        signatures.push(Bytes::copy_from_slice(&identity.sign(&inputs.digest())));
    }
    let compress = o.payloads.len() > 1;
    let msg = OutboundMessage {
        dest: String::new(),
        payload: Bytes::new(),
        dests: o.dests.to_vec(),
        max_holding_seconds: o.max_holding_seconds,
        nonce: o.nonce,
        block_hash: o.block_hash,
        signatures,
        payloads: o.payloads,
    };
    encode_client_message(ClientMessageType::OutboundMessage, &msg.encode_to_vec(), compress)
}

/// An outbound message as the node sees it, with the legacy fields
/// resolved (`dests` falling back to `dest`, `payloads` to `payload`).
#[derive(Clone, Debug)]
pub struct ParsedOutbound {
    /// Destinations.
    pub dests: Vec<String>,
    /// One payload per destination (the shared one repeated).
    pub payloads: Vec<Bytes>,
    /// One signature per destination.
    pub signatures: Vec<Bytes>,
    /// Sig-chain nonce.
    pub nonce: u32,
    /// Block hash the sender signed.
    pub block_hash: Bytes,
    /// `max_holding_seconds`.
    pub max_holding_seconds: u32,
}

impl ParsedOutbound {
    /// Checks counts as the node does (§11.2 point 4).
    pub fn from_message(m: OutboundMessage) -> Result<Self> {
        let dests = if m.dests.is_empty() && !m.dest.is_empty() { vec![m.dest] } else { m.dests };
        let payloads = if m.payloads.is_empty() && !m.payload.is_empty() { vec![m.payload] } else { m.payloads };
        if dests.is_empty() {
            return Err(NknError::Malformed("no destination"));
        }
        let payloads = match payloads.len() {
            1 => vec![payloads[0].clone(); dests.len()],
            n if n == dests.len() => payloads,
            _ => return Err(NknError::Malformed("payload count")),
        };
        if m.signatures.len() != dests.len() {
            return Err(NknError::Malformed("signature count"));
        }
        Ok(ParsedOutbound {
            dests,
            payloads,
            signatures: m.signatures,
            nonce: m.nonce,
            block_hash: m.block_hash,
            max_holding_seconds: m.max_holding_seconds,
        })
    }

    /// Verifies every destination's signature (§7.2).
    pub fn verify(&self, src: &str, node_pubkey: &[u8; 32]) -> bool {
        self.dests.iter().enumerate().all(|(i, d)| {
            verify_outbound_signature(
                src,
                d,
                node_pubkey,
                &self.block_hash,
                self.nonce,
                self.payloads[i].len() as u32,
                &self.signatures[i],
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Receipt (§7.3)

/// `sha256(sha256(prev_hash) || 00 00 00)`.
pub fn receipt_digest(prev_hash: &[u8]) -> [u8; 32] {
    sha256(&[&sha256(&[prev_hash]), &[0, 0, 0]])
}

/// The RECEIPT `ClientMessage` frame for an inbound `prev_hash`.
pub fn build_receipt(identity: &Identity, prev_hash: &[u8]) -> Bytes {
    let r = Receipt {
        prev_hash: Bytes::copy_from_slice(prev_hash),
        signature: Bytes::copy_from_slice(&identity.sign(&receipt_digest(prev_hash))),
    };
    encode_client_message(ClientMessageType::Receipt, &r.encode_to_vec(), false).expect("no compression")
}

/// Verifies a receipt signed by the destination key `public_key`.
pub fn verify_receipt(public_key: &[u8; 32], r: &Receipt) -> bool {
    identity::verify(public_key, &receipt_digest(&r.prev_hash), &r.signature)
}

// ---------------------------------------------------------------------------
// Auth challenge (§3.2)

/// `sha256(challenge || salt)`.
pub fn auth_digest(challenge: &[u8], salt: &[u8]) -> [u8; 32] {
    sha256(&[challenge, salt])
}

/// The challenge signature.
pub fn sign_auth_challenge(identity: &Identity, challenge: &[u8], salt: &[u8]) -> [u8; 64] {
    identity.sign(&auth_digest(challenge, salt))
}

/// Verifies a challenge signature by `public_key`.
pub fn verify_auth_challenge(public_key: &[u8; 32], challenge: &[u8], salt: &[u8], signature: &[u8]) -> bool {
    identity::verify(public_key, &auth_digest(challenge, salt), signature)
}

// ---------------------------------------------------------------------------
// ClientMessage frames (§4.1)

/// zlib (RFC 1950) compression.
pub fn zlib_compress(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).map_err(|e| NknError::Zlib(e.to_string()))?;
    e.finish().map_err(|e| NknError::Zlib(e.to_string()))
}

/// zlib decompression, refusing output beyond `limit` bytes.
pub fn zlib_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| NknError::Zlib(e.to_string()))?;
    if out.len() > limit {
        return Err(NknError::MessageTooLarge(out.len()));
    }
    Ok(out)
}

/// Serializes a `ClientMessage` around an inner message.
pub fn encode_client_message(ty: ClientMessageType, inner: &[u8], compress: bool) -> Result<Bytes> {
    let (message, compression) = if compress {
        (zlib_compress(inner)?, CompressionType::CompressionZlib)
    } else {
        (inner.to_vec(), CompressionType::CompressionNone)
    };
    let cm = ClientMessage { message_type: ty as i32, message: message.into(), compression_type: compression as i32 };
    Ok(cm.encode_to_vec().into())
}

/// Parses a `ClientMessage` and returns its type and the inner message,
/// decompressed (capped at 4 MiB).
pub fn decode_client_message(frame: &[u8]) -> Result<(ClientMessageType, Bytes)> {
    let cm = ClientMessage::decode(frame)?;
    let ty = ClientMessageType::try_from(cm.message_type).map_err(|_| NknError::Malformed("message type"))?;
    let inner = match CompressionType::try_from(cm.compression_type) {
        Ok(CompressionType::CompressionNone) => cm.message,
        Ok(CompressionType::CompressionZlib) => zlib_decompress(&cm.message, MAX_NODE_MESSAGE)?.into(),
        Err(_) => return Err(NknError::Malformed("compression type")),
    };
    Ok((ty, inner))
}

/// A client's view of a node frame: clients ignore `compression_type` on
/// inbound frames (§4.1), and so does this parser.
pub fn parse_inbound(frame: &[u8]) -> Result<InboundMessage> {
    let cm = ClientMessage::decode(frame)?;
    if cm.message_type != ClientMessageType::InboundMessage as i32 {
        return Err(NknError::Malformed("not an inbound message"));
    }
    Ok(InboundMessage::decode(cm.message)?)
}

/// The node's INBOUND_MESSAGE frame (never compressed).
pub fn build_inbound(src: &str, payload: Bytes, prev_hash: Bytes) -> Bytes {
    let m = InboundMessage { src: src.to_string(), payload, prev_hash };
    encode_client_message(ClientMessageType::InboundMessage, &m.encode_to_vec(), false).expect("no compression")
}

// ---------------------------------------------------------------------------
// JSON control messages (§3)

/// Error code: success.
pub const ERR_SUCCESS: i64 = 0;
/// Error code: the node is not responsible for the client; `Result` is the
/// right node's info.
pub const ERR_WRONG_NODE: i64 = 48001;
/// Error code: invalid method (JSON-RPC, negated on the wire there).
pub const ERR_INVALID_METHOD: i64 = 42001;
/// Error code: invalid parameters (e.g. a bad `Addr` in `setClient`).
pub const ERR_INVALID_PARAMS: i64 = 42002;
/// Error code the node returns when the challenge signature does not verify.
pub const ERR_INVALID_SIGNATURE: i64 = 42003;

/// Node info, as returned by `getwsaddr` and in `setClient` (§2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the WebSocket endpoint (no scheme).
    #[serde(default)]
    pub addr: String,
    /// `host:port` of the node's JSON-RPC, possibly empty.
    #[serde(default, rename = "rpcAddr")]
    pub rpc_addr: String,
    /// The node's Ed25519 public key, hex.
    #[serde(default)]
    pub pubkey: String,
    /// The node's Chord ID, hex.
    #[serde(default)]
    pub id: String,
    /// WebRTC answer (unused).
    #[serde(default)]
    pub sdp: String,
}

impl NodeInfo {
    /// The node's public key; the field is mandatory for sending (§2).
    pub fn public_key(&self) -> Result<[u8; 32]> {
        let mut pk = [0u8; 32];
        hex::decode_to_slice(&self.pubkey, &mut pk).map_err(|_| NknError::Node("node info without valid pubkey".into()))?;
        Ok(pk)
    }
}

/// The node's JSON envelope `{Action, Result, Error, Desc, Version}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeJson {
    /// Action name.
    #[serde(rename = "Action", default)]
    pub action: String,
    /// Action-specific result.
    #[serde(rename = "Result", default)]
    pub result: serde_json::Value,
    /// Error code (0 on success).
    #[serde(rename = "Error", default)]
    pub error: i64,
    /// Description.
    #[serde(rename = "Desc", default)]
    pub desc: String,
    /// Always 1.
    #[serde(rename = "Version", default)]
    pub version: i64,
    /// Only in `authChallenge`: 32 random bytes, hex.
    #[serde(rename = "Challenge", default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

impl NodeJson {
    /// An envelope with Error 0 / SUCCESS / Version 1.
    pub fn success(action: &str, result: serde_json::Value) -> Self {
        NodeJson {
            action: action.to_string(),
            result,
            error: ERR_SUCCESS,
            desc: "SUCCESS".into(),
            version: 1,
            challenge: None,
        }
    }

    /// An error envelope.
    pub fn error(action: &str, code: i64, desc: &str, result: serde_json::Value) -> Self {
        NodeJson { action: action.to_string(), result, error: code, desc: desc.into(), version: 1, challenge: None }
    }

    /// The `authChallenge` message.
    pub fn auth_challenge(challenge: &[u8]) -> Self {
        let mut j = Self::success("authChallenge", serde_json::Value::String(String::new()));
        j.challenge = Some(hex::encode(challenge));
        j
    }

    /// The `setClient` success reply with node info and block hash.
    pub fn set_client_ok(node: &NodeInfo, sig_chain_block_hash: &[u8]) -> Self {
        Self::success(
            "setClient",
            serde_json::json!({ "node": node, "sigChainBlockHash": hex::encode(sig_chain_block_hash) }),
        )
    }

    /// An `updateSigChainBlockHash` push.
    pub fn update_block_hash(hash: &[u8]) -> Self {
        Self::success("updateSigChainBlockHash", serde_json::Value::String(hex::encode(hash)))
    }

    /// Serializes to a JSON string (a text frame).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }
}

/// The client's `setClient` request (§3.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetClient {
    /// `"setClient"`.
    #[serde(rename = "Action")]
    pub action: String,
    /// The client address.
    #[serde(rename = "Addr")]
    pub addr: String,
    /// Hex salt, present only after a challenge.
    #[serde(rename = "ClientSalt", default, skip_serializing_if = "Option::is_none")]
    pub client_salt: Option<String>,
    /// Hex signature over `sha256(challenge || salt)`, only after a challenge.
    #[serde(rename = "Signature", default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl SetClient {
    /// The request for `addr`, answering `challenge` when there is one
    /// (with a fresh random salt).
    pub fn new(identity: &Identity, addr: &str, challenge: Option<&[u8]>) -> Self {
        Self::with_salt(identity, addr, challenge, rand::random())
    }

    /// Like [`SetClient::new`] with a given salt.
    pub fn with_salt(identity: &Identity, addr: &str, challenge: Option<&[u8]>, salt: [u8; 32]) -> Self {
        let (client_salt, signature) = match challenge {
            Some(c) => (Some(hex::encode(salt)), Some(hex::encode(sign_auth_challenge(identity, c, &salt)))),
            None => (None, None),
        };
        SetClient { action: "setClient".into(), addr: addr.to_string(), client_salt, signature }
    }

    /// Node side: verifies the auth fields against `challenge`. `Ok(false)`
    /// when they are absent (unauthenticated client), an error when they
    /// are present and wrong or when `Addr` is invalid.
    pub fn verify(&self, challenge: &[u8]) -> Result<bool> {
        let a = Address::parse(&self.addr)?;
        match (&self.client_salt, &self.signature) {
            (Some(salt), Some(sig)) => {
                let salt = hex::decode(salt).map_err(|_| NknError::Malformed("salt"))?;
                let sig = hex::decode(sig).map_err(|_| NknError::Malformed("signature"))?;
                if verify_auth_challenge(&a.public_key, challenge, &salt, &sig) {
                    Ok(true)
                } else {
                    Err(NknError::Node("challenge signature does not verify".into()))
                }
            }
            _ => Ok(false),
        }
    }

    /// Serializes to a JSON string (a text frame).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("serializable")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nkn::identity::tests::{a, b, h32, PK_A, PK_B};

    const ENVELOPE: &str = "0a253eea6452ff9c7f8554c958d23b3dd94cde105be8bec3cf085fe4a9b8c5b4e820127da2abeb10011a18000102030405060708090a0b0c0d0e0f1011121314151617";

    #[test]
    fn var_uint() {
        let enc = |n| {
            let mut v = Vec::new();
            put_var_uint(&mut v, n);
            hex::encode(v)
        };
        assert_eq!(enc(0), "00");
        assert_eq!(enc(0xfc), "fc");
        assert_eq!(enc(0xfd), "fdfd00");
        assert_eq!(enc(0xffff), "fdffff");
        assert_eq!(enc(0x10000), "fe00000100");
        assert_eq!(enc(0x1_0000_0000), "ff0000000001000000");
        let mut v = Vec::new();
        put_var_bytes(&mut v, &[]);
        assert_eq!(v, [0]);
    }

    fn vector_inputs(nonce: u32) -> SigChainInputs<'static> {
        let src = format!("__0__.{PK_A}");
        let dest = format!("__0__.{PK_B}");
        SigChainInputs {
            nonce,
            data_size: 67,
            block_hash: &[0xaa; 32],
            src_id: client_id(&src),
            src_pubkey: h32(PK_A),
            dest_id: client_id(&dest),
            dest_pubkey: h32(PK_B),
            node_pubkey: h32(PK_B),
        }
    }

    #[test]
    fn vector_12_5_signature() {
        let i = vector_inputs(305419896);
        assert_eq!(
            hex::encode(i.dest_id),
            "10dd880ece2120c09d6219f8b6571c25a02bd20901ee4528ea3d0508aa5a90fc"
        );
        let md = i.metadata();
        // nonce, data size, then the VarBytes fields
        let expect = "7856341243000000".to_string()
            + &format!("20{}", "aa".repeat(32))
            + &format!("20{}", hex::encode(i.src_id))
            + &format!("20{PK_A}")
            + &format!("20{}", hex::encode(i.dest_id))
            + &format!("20{PK_B}");
        assert_eq!(hex::encode(md), expect);
        assert_eq!(hex::encode(i.elem()), format!("0020{PK_B}00"));
        assert_eq!(hex::encode(i.digest()), "66bf8a30941064eedb13ef48a44c46b6dccd6f90d90e05c306afa18b2c0e1a43");
        assert_eq!(
            hex::encode(a().sign(&i.digest())),
            "4dd31efb44fb3451384d65e9064e8cd5abcea4fd3d2f4cf23c75d6889ffbd269b2ca23c8fa7931c8ec3d361e8af3ea159e7b9d3e18f2d002ce8fad82a0f94100"
        );
        let i2 = vector_inputs(633367720);
        assert_eq!(
            hex::encode(a().sign(&i2.digest())),
            "8acffbbe6522667ae1dcf86d702586b93d584f83790fc33c6027b2eccb66a2b70f53e76f5e49b5ae93fc6fb57c96f8eb0f3d25bfa7a3b1eae00d7135f3cde801"
        );
    }

    #[test]
    fn vector_12_5_frame() {
        let src = a().address("__0__");
        let dests = vec![format!("__0__.{PK_B}")];
        let frame = build_outbound(
            &a(),
            Outbound {
                src: &src,
                dests: &dests,
                payloads: vec![hex::decode(ENVELOPE).unwrap().into()],
                node_pubkey: h32(PK_B),
                block_hash: Bytes::from(vec![0xaa; 32]),
                nonce: 305419896,
                max_holding_seconds: 0,
            },
        )
        .unwrap();
        assert_eq!(
            hex::encode(&frame),
            "12f7011a465f5f305f5f2e3463623561626636616437396662663561626263636166636332363964383563643236353165643462383835623538363966323431616564663061356261323928f8acd191013220aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa3a404dd31efb44fb3451384d65e9064e8cd5abcea4fd3d2f4cf23c75d6889ffbd269b2ca23c8fa7931c8ec3d361e8af3ea159e7b9d3e18f2d002ce8fad82a0f9410042430a253eea6452ff9c7f8554c958d23b3dd94cde105be8bec3cf085fe4a9b8c5b4e820127da2abeb10011a18000102030405060708090a0b0c0d0e0f1011121314151617"
        );
        // Node side: parse and verify.
        let (ty, inner) = decode_client_message(&frame).unwrap();
        assert_eq!(ty, ClientMessageType::OutboundMessage);
        let p = ParsedOutbound::from_message(OutboundMessage::decode(inner).unwrap()).unwrap();
        assert!(p.verify(&src, &h32(PK_B)));
        assert!(!p.verify(&src, &h32(PK_A)));
        assert!(!p.verify(&a().address("__1__"), &h32(PK_B)));
    }

    #[test]
    fn multi_payload_frame_is_zlib() {
        let src = a().address("");
        let dests = vec![b().address("x"), b().address("y")];
        let frame = build_outbound(
            &a(),
            Outbound {
                src: &src,
                dests: &dests,
                payloads: vec![Bytes::from_static(b"one"), Bytes::from_static(b"two!")],
                node_pubkey: h32(PK_B),
                block_hash: Bytes::new(),
                nonce: 7,
                max_holding_seconds: 30,
            },
        )
        .unwrap();
        let cm = ClientMessage::decode(frame.as_ref()).unwrap();
        assert_eq!(cm.compression_type, CompressionType::CompressionZlib as i32);
        assert_eq!(&cm.message[..2], &[0x78, 0x9c]);
        let (_, inner) = decode_client_message(&frame).unwrap();
        let om = OutboundMessage::decode(inner).unwrap();
        assert!(om.block_hash.is_empty());
        assert_eq!(om.max_holding_seconds, 30);
        let p = ParsedOutbound::from_message(om).unwrap();
        assert_eq!(p.payloads[1].as_ref(), b"two!");
        assert!(p.verify(&src, &h32(PK_B)));
        // Count mismatches are refused.
        assert!(build_outbound(
            &a(),
            Outbound {
                src: &src,
                dests: &dests,
                payloads: vec![Bytes::new(); 3],
                node_pubkey: [0; 32],
                block_hash: Bytes::new(),
                nonce: 0,
                max_holding_seconds: 0
            }
        )
        .is_err());
        // Decompression is capped.
        let big = zlib_compress(&vec![0u8; 100_000]).unwrap();
        assert!(zlib_decompress(&big, 99_999).is_err());
        assert_eq!(zlib_decompress(&big, 100_000).unwrap().len(), 100_000);
    }

    #[test]
    fn vector_12_6_receipt() {
        let frame = build_receipt(&b(), &[0xbb; 32]);
        let sig = "b1aba8f3d9bada8af78f07eed9e0a4fa6c9110f43bd2911cf9b0c12796d05b2df34212efba7f695d51d81d1aeba7354e74bf82839cdc98f9b35c127f3060e207";
        assert_eq!(hex::encode(&frame), format!("080212640a20{}1240{sig}", "bb".repeat(32)));
        let (ty, inner) = decode_client_message(&frame).unwrap();
        assert_eq!(ty, ClientMessageType::Receipt);
        let r = Receipt::decode(inner).unwrap();
        assert!(verify_receipt(&b().public_key(), &r));
        assert!(!verify_receipt(&a().public_key(), &r));
    }

    #[test]
    fn vector_12_7_auth() {
        let (c, s) = ([0xcc; 32], [0xdd; 32]);
        assert_eq!(hex::encode(auth_digest(&c, &s)), "5855266bbab10ac48bbac9b714edf3239b2e7d572a6a9f6d1da0a53cbfa7be0e");
        let sig = sign_auth_challenge(&a(), &c, &s);
        assert_eq!(
            hex::encode(sig),
            "6d44345f7256d8c312bedc702a7b2aec94b7f65bfd5cc4f66477ab54a15a4793850931896d0613371955cc6fcb15864f05ad1b4378039f938cbe0e2f1da81700"
        );
        let addr = a().address("");
        let sc = SetClient::with_salt(&a(), &addr, Some(&c), s);
        assert_eq!(sc.signature.as_deref(), Some(hex::encode(sig).as_str()));
        let parsed: SetClient = serde_json::from_str(&sc.to_json()).unwrap();
        assert_eq!(parsed, sc);
        assert!(parsed.verify(&c).unwrap());
        assert!(parsed.verify(&[0; 32]).is_err());
        let anon = SetClient::new(&a(), &addr, None);
        let j = anon.to_json();
        assert!(!j.contains("Signature") && !j.contains("ClientSalt"), "{j}");
        assert!(!anon.verify(&c).unwrap());
        let bad = SetClient { addr: "nope".into(), ..anon };
        assert!(bad.verify(&c).is_err());
    }

    #[test]
    fn inbound_and_json() {
        let f = build_inbound("src", Bytes::from_static(b"p"), Bytes::from_static(b"h"));
        let m = parse_inbound(&f).unwrap();
        assert_eq!((m.src.as_str(), m.payload.as_ref(), m.prev_hash.as_ref()), ("src", &b"p"[..], &b"h"[..]));
        assert!(parse_inbound(&build_receipt(&a(), b"x")).is_err());

        let ch = NodeJson::auth_challenge(&[1; 32]).to_json();
        let v: serde_json::Value = serde_json::from_str(&ch).unwrap();
        assert_eq!(v["Action"], "authChallenge");
        assert_eq!(v["Challenge"], "01".repeat(32));
        assert_eq!(v["Error"], 0);
        assert_eq!(v["Version"], 1);
        let node = NodeInfo { addr: "127.0.0.1:1".into(), pubkey: PK_B.into(), ..Default::default() };
        let ok: NodeJson = serde_json::from_str(&NodeJson::set_client_ok(&node, &[0xaa; 32]).to_json()).unwrap();
        assert_eq!(ok.result["sigChainBlockHash"], "aa".repeat(32));
        let n: NodeInfo = serde_json::from_value(ok.result["node"].clone()).unwrap();
        assert_eq!(n, node);
        assert_eq!(n.public_key().unwrap(), h32(PK_B));
        assert!(NodeInfo::default().public_key().is_err());
        // Node info from JSON with missing keys.
        let n: NodeInfo = serde_json::from_str(r#"{"addr":"h:1","rpcAddr":"h:2"}"#).unwrap();
        assert_eq!(n.rpc_addr, "h:2");
    }
}
