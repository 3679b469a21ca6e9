//! Path frames and their codec: the wire format on one path.
//!
//! Every frame is a 12-byte header followed by a body:
//!
//! ```text
//!  0        1        2                 4                 8                12
//! +--------+--------+-----------------+-----------------+-----------------+
//! |  type  | flags  | reserved (0)    | body length u32 | CRC-32C u32     |
//! +--------+--------+-----------------+-----------------+-----------------+
//! ```
//!
//! The CRC-32C (Castagnoli, as in iSCSI) covers the first 8 header bytes
//! and the body. It is computed by the `crc-fast` crate, which folds with
//! carry-less multiplication (PCLMULQDQ/VPCLMULQDQ, or ARM PMULL) and is
//! about twice as fast here as the `crc32` instruction of the `crc32c`
//! crate (benches/session.rs: codec 7.5 vs 3.4 GiB/s), so a bit flipped anywhere
//! in a frame — a DATA payload, or an ACK's `delivered`, which would make
//! the sender free bytes the peer never got — is detected before the frame
//! is used. A frame whose check fails is consumed and reported as
//! [`FrameError::Corrupt`]; what that means for the path is the session's
//! decision (a reliable path is closed, a lossy one treats it as lost).
//!
//! The frames that make up the data path (DATA, ACK, PING, PONG) have
//! fixed-width big-endian bodies so that encoding and decoding cost a few
//! loads and stores; the rare, extensible ones (HELLO, HELLO_REPLY,
//! CONTROL) carry protobuf. Decoding is two-step like mini-redis: a cheap
//! check of the header decides whether a whole frame is buffered, so a
//! partial frame allocates nothing, and the body is split off the read
//! buffer without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Size of the frame header.
pub const HEADER_LEN: usize = 12;
/// Where the CRC-32C sits in the header (it covers the bytes before it and
/// the body).
const CRC_AT: usize = 8;
/// Largest payload the sender puts in one DATA frame.
pub const MAX_DATA_PAYLOAD: usize = 64 * 1024;

/// Frame type codes.
pub mod kind {
    pub const DATA: u8 = 1;
    pub const ACK: u8 = 2;
    pub const PING: u8 = 3;
    pub const PONG: u8 = 4;
    pub const HELLO: u8 = 5;
    pub const HELLO_REPLY: u8 = 6;
    pub const CONTROL: u8 = 7;
}

/// DATA flag: the stream ends after this frame's last byte.
pub const FLAG_FIN: u8 = 0x01;
/// Any type: a receiver that does not know the type may skip the frame
/// (without it, an unknown type is a protocol error on that path).
pub const FLAG_IGNORABLE: u8 = 0x80;

/// One frame on a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream bytes `[offset, offset + payload.len())`.
    Data { offset: u64, payload: Bytes, fin: bool },
    /// `path_received`: every stream byte below it has arrived on this
    /// path. `delivered`: every byte below it has been delivered to the
    /// application (frees the peer's send buffer).
    Ack { path_received: u64, delivered: u64 },
    /// Heartbeat; the peer echoes the token in a PONG.
    Ping(u64),
    Pong(u64),
    /// Path handshake request: an encoded `esi.ModifyRequest`.
    Hello(Bytes),
    /// Path handshake answer: an encoded `resi.HelloReply`.
    HelloReply(Bytes),
    /// Session housekeeping: an encoded `resi.Control`.
    Control(Bytes),
}

/// Why bytes on a path are not a valid frame. Any of these but
/// [`FrameError::Corrupt`] ends that path (never the session or the
/// gateway); a corrupt frame is the session's to judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame type {kind} has a body of {len} bytes, expected {expected}")]
    BadLength { kind: u8, len: usize, expected: &'static str },
    /// The frame's CRC-32C does not match its bytes: they were altered on
    /// the way. The frame has been consumed and must not be used.
    #[error("corrupt frame (type {kind}, {len} bytes): CRC-32C mismatch")]
    Corrupt { kind: u8, len: usize },
}

impl FrameError {
    /// Whether this is a failed integrity check (rather than a malformed or
    /// oversized frame).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, FrameError::Corrupt { .. })
    }
}

impl Frame {
    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    fn body_len(&self) -> usize {
        match self {
            Frame::Data { payload, .. } => 8 + payload.len(),
            Frame::Ack { .. } => 16,
            Frame::Ping(_) | Frame::Pong(_) => 8,
            Frame::Hello(b) | Frame::HelloReply(b) | Frame::Control(b) => b.len(),
        }
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        let start = dst.len();
        let (kind, flags) = match self {
            Frame::Data { fin, .. } => (kind::DATA, if *fin { FLAG_FIN } else { 0 }),
            Frame::Ack { .. } => (kind::ACK, 0),
            Frame::Ping(_) => (kind::PING, 0),
            Frame::Pong(_) => (kind::PONG, 0),
            Frame::Hello(_) => (kind::HELLO, 0),
            Frame::HelloReply(_) => (kind::HELLO_REPLY, 0),
            Frame::Control(_) => (kind::CONTROL, 0),
        };
        dst.put_u8(kind);
        dst.put_u8(flags);
        dst.put_u16(0);
        dst.put_u32(self.body_len() as u32);
        dst.put_u32(0);
        match self {
            Frame::Data { offset, payload, .. } => {
                dst.put_u64(*offset);
                dst.put_slice(payload);
            }
            Frame::Ack { path_received, delivered } => {
                dst.put_u64(*path_received);
                dst.put_u64(*delivered);
            }
            Frame::Ping(t) | Frame::Pong(t) => dst.put_u64(*t),
            Frame::Hello(b) | Frame::HelloReply(b) | Frame::Control(b) => dst.put_slice(b),
        }
        seal(&mut dst[start..]);
    }

    /// Encodes a DATA frame from a borrowed payload (saves a `Bytes`
    /// refcount on the hot path).
    pub fn encode_data(dst: &mut BytesMut, offset: u64, payload: &[u8], fin: bool) {
        dst.reserve(DATA_HEADER_LEN + payload.len());
        Frame::encode_data_header(dst, offset, payload, fin);
        dst.put_slice(payload);
    }

    /// Encodes only the header and offset of a DATA frame (20 bytes) whose
    /// payload travels as a separate buffer (a vectored write): the CRC
    /// still covers the payload, which is read but not copied.
    pub fn encode_data_header(dst: &mut BytesMut, offset: u64, payload: &[u8], fin: bool) {
        let head = [kind::DATA, if fin { FLAG_FIN } else { 0 }, 0, 0];
        let len = ((8 + payload.len()) as u32).to_be_bytes();
        let off = offset.to_be_bytes();
        // The check is computed over the pieces, so the payload is read once.
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        for piece in [&head[..], &len[..], &off[..], payload] {
            digest.update(piece);
        }
        dst.reserve(DATA_HEADER_LEN);
        dst.put_slice(&head);
        dst.put_slice(&len);
        dst.put_u32(digest.finalize() as u32);
        dst.put_slice(&off);
    }

    /// How many more bytes `src` needs to hold the whole frame it begins
    /// with: 0 when it holds one, or not yet its header (a reader makes
    /// room for a frame it knows the size of; [`Frame::decode`] does not).
    pub fn missing(src: &[u8]) -> usize {
        if src.len() < HEADER_LEN {
            return 0;
        }
        let len = u32::from_be_bytes([src[4], src[5], src[6], src[7]]) as usize;
        (HEADER_LEN + len).saturating_sub(src.len())
    }

    /// Takes one whole frame off the front of `src`, if one is buffered.
    /// `Ok(None)` means "need more bytes". Frames of an unknown type flagged
    /// ignorable are consumed and skipped. A whole frame whose CRC-32C fails
    /// is consumed and returned as [`FrameError::Corrupt`]; its type and
    /// flags are not looked at (they may be the altered bytes).
    pub fn decode(src: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
        loop {
            if src.len() < HEADER_LEN {
                return Ok(None);
            }
            let kind = src[0];
            let flags = src[1];
            let len = u32::from_be_bytes([src[4], src[5], src[6], src[7]]) as usize;
            if len > max_frame {
                return Err(FrameError::TooLarge { len, max: max_frame });
            }
            if src.len() < HEADER_LEN + len {
                return Ok(None);
            }
            let sent = u32::from_be_bytes([src[8], src[9], src[10], src[11]]);
            let intact = checksum(&src[..CRC_AT], &src[HEADER_LEN..HEADER_LEN + len]) == sent;
            src.advance(HEADER_LEN);
            let mut body = src.split_to(len);
            if !intact {
                return Err(FrameError::Corrupt { kind, len });
            }
            if !known(kind) && flags & FLAG_IGNORABLE == 0 {
                return Err(FrameError::UnknownType(kind));
            }
            if !known(kind) {
                continue;
            }
            return parse_body(kind, flags, &mut body).map(Some);
        }
    }
}

/// Header plus offset of a DATA frame: what precedes its payload.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 8;

/// Where a path's outgoing frames are put: a plain buffer (one copy of
/// everything), or [`Segments`] (payloads kept as shared slices).
pub trait FrameSink {
    /// Appends a whole frame.
    fn put_frame(&mut self, frame: &Frame);
    /// Appends a DATA frame whose payload is a shared slice.
    fn put_data(&mut self, offset: u64, payload: &Bytes, fin: bool);
    /// Bytes appended so far and not yet taken.
    fn queued(&self) -> usize;
}

impl FrameSink for BytesMut {
    fn put_frame(&mut self, frame: &Frame) {
        frame.encode(self);
    }
    fn put_data(&mut self, offset: u64, payload: &Bytes, fin: bool) {
        Frame::encode_data(self, offset, payload, fin);
    }
    fn queued(&self) -> usize {
        self.len()
    }
}

/// Encoded frames waiting for a stream path, as a queue of buffers for a
/// vectored write: small frames and DATA headers are encoded into one
/// scratch buffer, DATA payloads stay the `Bytes` slices of the send
/// buffer. So a payload sent on several paths is never copied per path;
/// the kernel gathers it from the one copy.
#[derive(Default)]
pub struct Segments {
    segs: std::collections::VecDeque<Bytes>,
    scratch: BytesMut,
    len: usize,
}

impl Segments {
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves encoded scratch bytes into the queue (before a payload slice,
    /// or before the queue is written).
    fn seal_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.segs.push_back(self.scratch.split().freeze());
        }
    }

    /// Fills `slices` with the first buffers to write; returns how many.
    pub fn io_slices<'a>(&'a mut self, slices: &mut [std::io::IoSlice<'a>]) -> usize {
        self.seal_scratch();
        let mut n = 0;
        for (slot, seg) in slices.iter_mut().zip(self.segs.iter()) {
            *slot = std::io::IoSlice::new(seg);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes (they were written).
    pub fn advance(&mut self, mut n: usize) {
        self.seal_scratch();
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.segs.front_mut() else { return };
            if front.len() > n {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.segs.pop_front();
        }
    }

    /// Everything queued as one buffer (for message transports, which send
    /// whole messages), leaving the queue empty.
    pub fn take_all(&mut self) -> BytesMut {
        self.seal_scratch();
        let mut out = BytesMut::with_capacity(self.len);
        for seg in self.segs.drain(..) {
            out.extend_from_slice(&seg);
        }
        self.len = 0;
        out
    }
}

impl FrameSink for Segments {
    fn put_frame(&mut self, frame: &Frame) {
        frame.encode(&mut self.scratch);
        self.len += frame.encoded_len();
    }
    fn put_data(&mut self, offset: u64, payload: &Bytes, fin: bool) {
        Frame::encode_data_header(&mut self.scratch, offset, payload, fin);
        self.len += DATA_HEADER_LEN + payload.len();
        if !payload.is_empty() {
            self.seal_scratch();
            self.segs.push_back(payload.clone());
        }
    }
    fn queued(&self) -> usize {
        self.len
    }
}

/// CRC-32C of the header's first 8 bytes followed by the body.
fn checksum(head: &[u8], body: &[u8]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    digest.update(head);
    digest.update(body);
    digest.finalize() as u32
}

/// Writes the CRC-32C into an encoded frame (`frame` is one whole frame,
/// header first). Public for test tools that alter frames on purpose (the
/// fault relay's tamper mode, an attacker that recomputes the check).
pub fn seal(frame: &mut [u8]) {
    let crc = checksum(&frame[..CRC_AT], &frame[HEADER_LEN..]);
    frame[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
}

fn known(kind: u8) -> bool {
    (kind::DATA..=kind::CONTROL).contains(&kind)
}

fn parse_body(kind: u8, flags: u8, body: &mut BytesMut) -> Result<Frame, FrameError> {
    let need = |expected: &'static str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(FrameError::BadLength { kind, len: body.len(), expected })
        }
    };
    Ok(match kind {
        kind::DATA => {
            need("at least 8", body.len() >= 8)?;
            let offset = body.get_u64();
            Frame::Data { offset, payload: body.split().freeze(), fin: flags & FLAG_FIN != 0 }
        }
        kind::ACK => {
            need("16", body.len() == 16)?;
            Frame::Ack { path_received: body.get_u64(), delivered: body.get_u64() }
        }
        kind::PING | kind::PONG => {
            need("8", body.len() == 8)?;
            let t = body.get_u64();
            if kind == kind::PING {
                Frame::Ping(t)
            } else {
                Frame::Pong(t)
            }
        }
        kind::HELLO => Frame::Hello(body.split().freeze()),
        kind::HELLO_REPLY => Frame::HelloReply(body.split().freeze()),
        _ => Frame::Control(body.split().freeze()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: Frame) {
        let mut buf = BytesMut::new();
        f.encode(&mut buf);
        assert_eq!(buf.len(), f.encoded_len());
        let got = Frame::decode(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(got, f);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_roundtrips() {
        roundtrip(Frame::Data { offset: 7, payload: Bytes::from_static(b"hello"), fin: false });
        roundtrip(Frame::Data { offset: u64::MAX - 5, payload: Bytes::new(), fin: true });
        roundtrip(Frame::Ack { path_received: 10, delivered: 3 });
        roundtrip(Frame::Ping(42));
        roundtrip(Frame::Pong(43));
        roundtrip(Frame::Hello(Bytes::from_static(b"\x0a\x00")));
        roundtrip(Frame::HelloReply(Bytes::from_static(b"x")));
        roundtrip(Frame::Control(Bytes::new()));
    }

    /// A sealed frame of any type and body (for malformed cases).
    fn raw(kind: u8, flags: u8, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_slice(&[kind, flags, 0, 0]);
        buf.put_u32(body.len() as u32);
        buf.put_u32(0);
        buf.put_slice(body);
        seal(&mut buf);
        buf
    }

    #[test]
    fn missing_counts_what_a_begun_frame_still_needs() {
        let mut whole = BytesMut::new();
        Frame::encode_data(&mut whole, 0, &[7u8; 1000], false);
        assert_eq!(Frame::missing(&whole), 0, "a whole frame needs nothing");
        assert_eq!(Frame::missing(&whole[..HEADER_LEN - 1]), 0, "no header yet: size unknown");
        assert_eq!(Frame::missing(&whole[..HEADER_LEN]), whole.len() - HEADER_LEN);
        assert_eq!(Frame::missing(&whole[..600]), whole.len() - 600);
        let mut part = BytesMut::from(&whole[..600]);
        assert_eq!(Frame::decode(&mut part, 1 << 20).unwrap(), None);
        assert_eq!(part.len(), 600, "an incomplete frame is left as it was");
    }

    #[test]
    fn data_layout_is_as_documented() {
        let mut buf = BytesMut::new();
        Frame::encode_data(&mut buf, 0x0102, b"ab", true);
        // CRC-32C as in iSCSI (RFC 3720): the standard check value first.
        assert_eq!(checksum(b"1234", b"56789"), 0xE306_9283);
        let crc = checksum(b"\x01\x01\x00\x00\x00\x00\x00\x0a", b"\x00\x00\x00\x00\x00\x00\x01\x02ab");
        let mut want = b"\x01\x01\x00\x00\x00\x00\x00\x0a".to_vec();
        want.extend_from_slice(&crc.to_be_bytes());
        want.extend_from_slice(b"\x00\x00\x00\x00\x00\x00\x01\x02ab");
        assert_eq!(&buf[..], &want[..]);
        // encode() and encode_data() agree.
        let mut other = BytesMut::new();
        Frame::Data { offset: 0x0102, payload: Bytes::from_static(b"ab"), fin: true }.encode(&mut other);
        assert_eq!(buf, other);
    }

    #[test]
    fn segments_carry_the_same_bytes_as_a_plain_buffer() {
        let payload = Bytes::from(vec![5u8; 3000]);
        let (mut flat, mut segs) = (BytesMut::new(), Segments::default());
        for sink in [&mut flat as &mut dyn FrameSink, &mut segs] {
            sink.put_frame(&Frame::Ack { path_received: 3, delivered: 2 });
            sink.put_data(9, &payload, false);
            sink.put_data(3009, &Bytes::new(), true);
            sink.put_frame(&Frame::Ping(4));
        }
        assert_eq!(segs.queued(), flat.len());
        // Written in uneven pieces, the bytes are those of the plain buffer.
        let mut written = Vec::new();
        while !segs.is_empty() {
            let mut slots = [std::io::IoSlice::new(&[]); 2];
            let n = segs.io_slices(&mut slots);
            let take = slots[..n].iter().map(|s| s.len()).sum::<usize>().min(1001);
            let mut left = take;
            for s in &slots[..n] {
                let k = s.len().min(left);
                written.extend_from_slice(&s[..k]);
                left -= k;
            }
            segs.advance(take);
        }
        assert_eq!(written, flat.to_vec());
    }

    #[test]
    fn any_flipped_bit_is_detected_and_the_frame_consumed() {
        let mut whole = BytesMut::new();
        Frame::Data { offset: 9, payload: Bytes::from_static(b"payload"), fin: false }.encode(&mut whole);
        Frame::Ack { path_received: 1 << 40, delivered: 1 << 40 }.encode(&mut whole);
        let first_len = HEADER_LEN + 8 + 7;
        // Every bit of the first frame except the length field (a changed
        // length makes it a different frame boundary: too large or waiting).
        for byte in (0..first_len).filter(|b| !(4..8).contains(b)) {
            for bit in 0..8 {
                let mut buf = whole.clone();
                buf[byte] ^= 1 << bit;
                let err = Frame::decode(&mut buf, 1 << 20).unwrap_err();
                assert!(err.is_corrupt(), "byte {byte} bit {bit}: {err}");
                // The corrupt frame is gone; the next one is intact.
                assert_eq!(Frame::decode(&mut buf, 1 << 20).unwrap(), Some(Frame::Ack { path_received: 1 << 40, delivered: 1 << 40 }));
            }
        }
        let mut ack = BytesMut::new();
        Frame::Ack { path_received: 5, delivered: 5 }.encode(&mut ack);
        ack[HEADER_LEN + 15] ^= 0x04;
        assert!(Frame::decode(&mut ack, 64).unwrap_err().is_corrupt(), "an altered ACK must not pass");
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut whole = BytesMut::new();
        Frame::Ping(9).encode(&mut whole);
        Frame::Ack { path_received: 1, delivered: 1 }.encode(&mut whole);
        let mut buf = BytesMut::new();
        let mut got = vec![];
        for b in whole.iter() {
            buf.put_u8(*b);
            while let Some(f) = Frame::decode(&mut buf, 64).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![Frame::Ping(9), Frame::Ack { path_received: 1, delivered: 1 }]);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00"[..]);
        assert!(matches!(Frame::decode(&mut buf, 1 << 20), Err(FrameError::TooLarge { .. })));
        let mut buf = raw(0x63, 0, b"");
        assert_eq!(Frame::decode(&mut buf, 64), Err(FrameError::UnknownType(0x63)));
        let mut buf = raw(kind::ACK, 0, b"x");
        assert!(matches!(Frame::decode(&mut buf, 64), Err(FrameError::BadLength { .. })));
        let mut buf = raw(kind::DATA, 0, b"ab");
        assert!(matches!(Frame::decode(&mut buf, 64), Err(FrameError::BadLength { .. })));
        assert!(!FrameError::UnknownType(1).is_corrupt());
    }

    #[test]
    fn unknown_ignorable_frames_are_skipped() {
        let mut buf = raw(0x63, FLAG_IGNORABLE, b"z");
        Frame::Ping(1).encode(&mut buf);
        assert_eq!(Frame::decode(&mut buf, 64).unwrap(), Some(Frame::Ping(1)));
    }
}
