//! Small gRPC helpers shared by the gateway and the session handshake.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderValue;

/// gRPC status codes (the numeric values are fixed by the gRPC spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    pub fn from_i32(v: i32) -> Code {
        use Code::*;
        match v {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }
}

/// A gRPC status: what a hop answers when it refuses or fails a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Status {
    pub code: Code,
    pub message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into() }
    }
}

impl Status {
    /// The status as a trailers-only gRPC response (HTTP 200, everything in
    /// the HEADERS frame, no body).
    pub fn to_response<B: Default>(&self) -> http::Response<B> {
        let mut rsp = http::Response::new(B::default());
        self.write_headers(rsp.headers_mut(), true);
        rsp
    }

    /// Writes `grpc-status` and (if any) a percent-encoded `grpc-message`;
    /// with `content_type`, also `content-type: application/grpc`.
    pub fn write_headers(&self, headers: &mut http::HeaderMap, content_type: bool) {
        if content_type {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        }
        headers.insert(GRPC_STATUS, status_code_value(self.code));
        if !self.message.is_empty() {
            let enc = percent_encoding::utf8_percent_encode(&self.message, GRPC_MESSAGE_SET).to_string();
            if let Ok(v) = HeaderValue::try_from(enc) {
                headers.insert(GRPC_MESSAGE, v);
            }
        }
    }

    /// Reads a status from response headers or trailers (`None` when there
    /// is no `grpc-status`).
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Status> {
        let code = headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse::<i32>().ok()?;
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|v| percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        Some(Status::new(Code::from_i32(code), message))
    }
}

/// `content-type` of gRPC requests and responses.
pub const CONTENT_TYPE: &str = "application/grpc";
/// Trailer (or trailers-only header) carrying the status code.
pub const GRPC_STATUS: &str = "grpc-status";
/// Trailer carrying the percent-encoded status message.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// Length of the gRPC message prefix: 1-byte compressed flag, 4-byte length.
pub const FRAME_HEADER_LEN: usize = 5;

/// Bytes the gRPC spec says must be percent-encoded in `grpc-message`:
/// everything outside printable ASCII, and `%` itself.
const GRPC_MESSAGE_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

fn status_code_value(code: Code) -> HeaderValue {
    const VALUES: [&str; 17] =
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16"];
    HeaderValue::from_static(VALUES[code as usize])
}

/// Frames one uncompressed gRPC message.
pub fn encode_frame(msg: &impl prost::Message) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode(&mut buf).expect("capacity reserved");
    buf.freeze()
}

/// Extracts the single message of a unary gRPC body (the whole body,
/// buffered). Compressed messages are refused: this hop does not inflate.
pub fn decode_unary_frame(mut body: Bytes) -> Result<Bytes, Status> {
    if body.len() < FRAME_HEADER_LEN {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("request body of {} bytes holds no gRPC message", body.len()),
        ));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(Status::new(
            Code::Unimplemented,
            "compressed messages are not supported by this hop; send Modify uncompressed",
        ));
    }
    if body.len() != len {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("gRPC message prefix says {len} bytes, body carries {}", body.len()),
        ));
    }
    Ok(body)
}

/// A gRPC response trailer block carrying `status`.
pub fn status_trailers(status: &Status) -> http::HeaderMap {
    let mut t = http::HeaderMap::with_capacity(2);
    status.write_headers(&mut t, false);
    t
}

/// Request header carrying the caller's deadline.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value (`TimeoutValue TimeoutUnit`: at most 8
/// digits, then one of `H M S m u n`).
pub fn parse_timeout(v: &HeaderValue) -> Option<std::time::Duration> {
    use std::time::Duration;
    let s = v.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        let p = |s: &'static str| parse_timeout(&HeaderValue::from_static(s));
        assert_eq!(p("100m"), Some(std::time::Duration::from_millis(100)));
        assert_eq!(p("2S"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(p("1H"), Some(std::time::Duration::from_secs(3600)));
        assert_eq!(p("5x"), None);
        assert_eq!(p("m"), None);
        assert_eq!(p("123456789S"), None);
    }

    #[test]
    fn messages_are_percent_encoded_and_decoded() {
        let st = Status::new(Code::Unavailable, "50% down ü\nnext");
        let h = status_trailers(&st);
        let raw = h.get(GRPC_MESSAGE).unwrap().to_str().unwrap();
        assert_eq!(raw, "50%25 down %C3%BC%0Anext");
        assert_eq!(Status::from_headers(&h), Some(st));
    }

    #[test]
    fn unary_frames_round_trip() {
        let msg = crate::proto::esi::Extension { id: 3, pass: true, data: Bytes::from_static(b"abc") };
        let framed = encode_frame(&msg);
        let inner = decode_unary_frame(framed.clone()).unwrap();
        assert_eq!(<crate::proto::esi::Extension as prost::Message>::decode(inner).unwrap(), msg);
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert_eq!(decode_unary_frame(compressed.into()).unwrap_err().code, Code::Unimplemented);
        assert_eq!(decode_unary_frame(framed.slice(..7)).unwrap_err().code, Code::InvalidArgument);
    }
}
