//! Path frames and their codec: the wire format on one path.
//!
//! Every frame is an 8-byte header followed by a body:
//!
//! ```text
//!  0        1        2                 4                                 8
//! +--------+--------+-----------------+---------------------------------+
//! |  type  | flags  | reserved (0)    | body length (u32, big-endian)   |
//! +--------+--------+-----------------+---------------------------------+
//! ```
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
pub const HEADER_LEN: usize = 8;
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

/// Why bytes on a path are not a valid frame. Any of these ends that path
/// (never the session or the gateway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame type {kind} has a body of {len} bytes, expected {expected}")]
    BadLength { kind: u8, len: usize, expected: &'static str },
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
    }

    /// Encodes a DATA frame from a borrowed payload (saves a `Bytes`
    /// refcount on the hot path).
    pub fn encode_data(dst: &mut BytesMut, offset: u64, payload: &[u8], fin: bool) {
        dst.reserve(HEADER_LEN + 8 + payload.len());
        dst.put_u8(kind::DATA);
        dst.put_u8(if fin { FLAG_FIN } else { 0 });
        dst.put_u16(0);
        dst.put_u32((8 + payload.len()) as u32);
        dst.put_u64(offset);
        dst.put_slice(payload);
    }

    /// Takes one whole frame off the front of `src`, if one is buffered.
    /// `Ok(None)` means "need more bytes". Frames of an unknown type flagged
    /// ignorable are consumed and skipped.
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
            if !known(kind) && flags & FLAG_IGNORABLE == 0 {
                return Err(FrameError::UnknownType(kind));
            }
            if src.len() < HEADER_LEN + len {
                src.reserve(HEADER_LEN + len - src.len());
                return Ok(None);
            }
            src.advance(HEADER_LEN);
            let mut body = src.split_to(len);
            if !known(kind) {
                continue;
            }
            return parse_body(kind, flags, &mut body).map(Some);
        }
    }
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

    #[test]
    fn data_layout_is_as_documented() {
        let mut buf = BytesMut::new();
        Frame::encode_data(&mut buf, 0x0102, b"ab", true);
        assert_eq!(&buf[..], b"\x01\x01\x00\x00\x00\x00\x00\x0a\x00\x00\x00\x00\x00\x00\x01\x02ab");
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
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\xff\xff\xff\xff"[..]);
        assert!(matches!(Frame::decode(&mut buf, 1 << 20), Err(FrameError::TooLarge { .. })));
        let mut buf = BytesMut::from(&b"\x63\x00\x00\x00\x00\x00\x00\x00"[..]);
        assert_eq!(Frame::decode(&mut buf, 64), Err(FrameError::UnknownType(0x63)));
        let mut buf = BytesMut::from(&b"\x02\x00\x00\x00\x00\x00\x00\x01x"[..]);
        assert!(matches!(Frame::decode(&mut buf, 64), Err(FrameError::BadLength { .. })));
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\x00\x00\x00\x02ab"[..]);
        assert!(matches!(Frame::decode(&mut buf, 64), Err(FrameError::BadLength { .. })));
    }

    #[test]
    fn unknown_ignorable_frames_are_skipped() {
        let mut buf = BytesMut::from(&b"\x63\x80\x00\x00\x00\x00\x00\x01z"[..]);
        Frame::Ping(1).encode(&mut buf);
        assert_eq!(Frame::decode(&mut buf, 64).unwrap(), Some(Frame::Ping(1)));
    }
}
