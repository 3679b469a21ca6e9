//! Small gRPC helpers shared by the gateway, the in-process client and the
//! session handshake. Each gRPC rule lives here once: the status of a
//! response head ([`Status::from_response_head`]), the message prefix
//! ([`Prefix`]), buffered decoding ([`Decoder`], [`read_single`]) and
//! counting of bodies that stream past ([`MessageTracker`]).

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

impl Status {
    /// The gRPC status for a response whose HTTP status is not 200 (the
    /// mapping of the gRPC spec, "HTTP to gRPC Status Code Mapping").
    pub fn from_http(status: http::StatusCode) -> Status {
        use http::StatusCode as H;
        let code = match status {
            H::BAD_REQUEST => Code::Internal,
            H::UNAUTHORIZED => Code::Unauthenticated,
            H::FORBIDDEN => Code::PermissionDenied,
            H::NOT_FOUND => Code::Unimplemented,
            H::TOO_MANY_REQUESTS | H::BAD_GATEWAY | H::SERVICE_UNAVAILABLE | H::GATEWAY_TIMEOUT => Code::Unavailable,
            _ => Code::Unknown,
        };
        Status::new(code, format!("HTTP status {status}"))
    }

    /// What a response's head says about the call, the one reading of it in
    /// this crate: `Some(status)` for a trailers-only response (or one that
    /// is not HTTP 200), `None` when messages and trailers follow.
    pub fn from_response_head(status: http::StatusCode, headers: &http::HeaderMap) -> Option<Status> {
        match Status::from_headers(headers) {
            Some(st) => Some(st),
            None if status != http::StatusCode::OK => Some(Status::from_http(status)),
            None => None,
        }
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

/// Frames one uncompressed gRPC message given as bytes.
pub fn frame_bytes(msg: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(FRAME_HEADER_LEN + msg.len());
    buf.put_u8(0);
    buf.put_u32(msg.len() as u32);
    buf.extend_from_slice(msg);
    buf.freeze()
}

/// The 5-byte prefix of one gRPC message: compressed flag, then the
/// big-endian length of the message bytes that follow. The one parser of
/// it in this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub compressed: bool,
    pub len: usize,
}

impl Prefix {
    /// The prefix at the front of `buf`, if all 5 bytes are there.
    pub fn peek(buf: &[u8]) -> Option<Prefix> {
        let p: [u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        Some(Prefix { compressed: p[0] != 0, len: u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize })
    }
}

/// A gRPC message longer than the configured maximum (`MaxMessageSize`).
/// The length counted is the one on the wire (a compressed message's
/// compressed length: a hop does not inflate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gRPC message of {len} bytes exceeds MaxMessageSize ({max} bytes)")]
pub struct MessageTooLarge {
    pub len: usize,
    pub max: usize,
}

impl MessageTooLarge {
    /// The `RESOURCE_EXHAUSTED` status a caller gets; `what` says which
    /// message ("request", "response").
    pub fn status(&self, what: &str) -> Status {
        Status::new(
            Code::ResourceExhausted,
            format!("{what} message of {} bytes exceeds MaxMessageSize ({} bytes)", self.len, self.max),
        )
    }
}

/// A refusal by [`MessageTracker::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Bytes of the chunk before the refused message's prefix.
    pub valid: usize,
    pub error: MessageTooLarge,
}

/// Follows the gRPC messages of a body while its chunks stream past,
/// without buffering them: it keeps at most a partial 5-byte prefix and a
/// count of message bytes still due. A message is refused as soon as its
/// prefix announces more than `max` bytes, before its bytes arrive.
#[derive(Debug, Clone)]
pub struct MessageTracker {
    max: usize,
    prefix: [u8; FRAME_HEADER_LEN],
    prefix_len: usize,
    remaining: usize,
    messages: u64,
}

impl MessageTracker {
    pub fn new(max: usize) -> MessageTracker {
        MessageTracker { max, prefix: [0; FRAME_HEADER_LEN], prefix_len: 0, remaining: 0, messages: 0 }
    }

    /// Accounts for the next chunk of the body. On a refusal the body must
    /// be abandoned; [`Refused::valid`] says how many bytes of this chunk
    /// come before the refused message (they may still be passed on).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Refused> {
        let total = chunk.len();
        let mut chunk = chunk;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.len());
                self.remaining -= n;
                chunk = &chunk[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[..n]);
            self.prefix_len += n;
            chunk = &chunk[n..];
            if let Some(p) = Prefix::peek(&self.prefix[..self.prefix_len]) {
                if p.len > self.max {
                    let valid = (total - chunk.len()).saturating_sub(FRAME_HEADER_LEN);
                    return Err(Refused { valid, error: MessageTooLarge { len: p.len, max: self.max } });
                }
                self.prefix_len = 0;
                self.remaining = p.len;
                self.messages += 1;
            }
        }
        Ok(())
    }

    /// Whether the bytes so far end inside a message (or its prefix).
    pub fn in_message(&self) -> bool {
        self.prefix_len > 0 || self.remaining > 0
    }

    /// Messages whose prefix has been seen.
    pub fn messages(&self) -> u64 {
        self.messages
    }
}

/// Which way a message travels, for the status a [`DecodeError`] becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A request message, refused by the hop or server that reads it.
    Request,
    /// A response message, refused by the client that reads it.
    Response,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

/// Why [`Decoder`] refused a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("compressed gRPC message (this hop does not inflate)")]
    Compressed,
    #[error(transparent)]
    TooLarge(#[from] MessageTooLarge),
    /// The body ended `have` bytes into a message (or its prefix).
    #[error("body ended {have} bytes into a gRPC message")]
    Truncated { have: usize },
}

impl DecodeError {
    /// The status the reader answers (a server, for a request) or reports
    /// (a client, for a response): `UNIMPLEMENTED` / `INTERNAL` for a
    /// compressed message, `RESOURCE_EXHAUSTED` for one over the limit,
    /// `INVALID_ARGUMENT` / `INTERNAL` for a cut one.
    pub fn status(&self, side: Side) -> Status {
        let what = side.name();
        match (self, side) {
            (DecodeError::TooLarge(e), _) => e.status(what),
            (DecodeError::Compressed, Side::Request) => {
                Status::new(Code::Unimplemented, "compressed messages are not supported by this hop; send them uncompressed")
            }
            (DecodeError::Compressed, Side::Response) => {
                Status::new(Code::Internal, "compressed response messages are not supported")
            }
            (DecodeError::Truncated { have }, Side::Request) => {
                Status::new(Code::InvalidArgument, format!("request ended {have} bytes into a gRPC message"))
            }
            (DecodeError::Truncated { have }, Side::Response) => {
                Status::new(Code::Internal, format!("response ended {have} bytes into a gRPC message"))
            }
        }
    }
}

/// Splits a body that arrives in chunks into its gRPC messages: the one
/// buffering message decoder of this crate (forwarded bodies are only
/// counted, by [`MessageTracker`]). A message that lies whole inside one
/// chunk is handed out as a slice of that chunk, not copied; only a message
/// split across chunks is gathered into a buffer. A message is refused as
/// soon as its prefix announces more than `max` bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    max: usize,
    /// The unread bytes, as the chunk they came in (no copy) ...
    chunk: Bytes,
    /// ... or, once a message spans chunks, gathered here (then `chunk` is
    /// empty).
    gathered: BytesMut,
}

impl Decoder {
    pub fn new(max: usize) -> Decoder {
        Decoder { max, chunk: Bytes::new(), gathered: BytesMut::new() }
    }

    /// Adds the next chunk of the body.
    pub fn push(&mut self, chunk: Bytes) {
        if self.chunk.is_empty() && self.gathered.is_empty() {
            self.chunk = chunk;
            return;
        }
        if !self.chunk.is_empty() {
            self.gathered.extend_from_slice(&std::mem::take(&mut self.chunk));
        }
        self.gathered.extend_from_slice(&chunk);
    }

    /// The next whole message, `Ok(None)` until one is complete.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let unread: &[u8] = if self.gathered.is_empty() { &self.chunk } else { &self.gathered };
        let Some(Prefix { compressed, len }) = Prefix::peek(unread) else { return Ok(None) };
        if compressed {
            return Err(DecodeError::Compressed);
        }
        if len > self.max {
            return Err(MessageTooLarge { len, max: self.max }.into());
        }
        if unread.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        if self.gathered.is_empty() {
            self.chunk.advance(FRAME_HEADER_LEN);
            return Ok(Some(self.chunk.split_to(len)));
        }
        self.gathered.advance(FRAME_HEADER_LEN);
        Ok(Some(self.gathered.split_to(len).freeze()))
    }

    /// At the end of the body: an error if it ended inside a message.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.chunk.len() + self.gathered.len() {
            0 => Ok(()),
            have => Err(DecodeError::Truncated { have }),
        }
    }
}

/// Reads a whole body that must carry one gRPC message at most (a unary
/// request or response): the message, if any, and the trailers, if any.
/// Refused: a second message, one over `max` bytes (at its prefix), a
/// compressed or cut one, a body that fails (`CANCELLED` for a request,
/// `UNAVAILABLE` for a response).
pub async fn read_single<B>(mut body: B, max: usize, side: Side) -> Result<(Option<Bytes>, Option<http::HeaderMap>), Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let (broken, extra) = match side {
        Side::Request => (Code::Cancelled, Code::InvalidArgument),
        Side::Response => (Code::Unavailable, Code::Internal),
    };
    let mut decoder = Decoder::new(max);
    let (mut message, mut trailers) = (None, None);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::new(broken, format!("{} body failed: {e}", side.name())))?;
        match frame.into_data() {
            Ok(data) => decoder.push(data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
        while let Some(m) = decoder.next_message().map_err(|e| e.status(side))? {
            if message.replace(m).is_some() {
                return Err(Status::new(extra, format!("a unary {} carries one message, this one more", side.name())));
            }
        }
    }
    decoder.finish().map_err(|e| e.status(side))?;
    Ok((message, trailers))
}

/// Extracts the single message of a unary gRPC body (the whole body,
/// buffered). Compressed messages are refused: this hop does not inflate.
pub fn decode_unary_frame(body: Bytes) -> Result<Bytes, Status> {
    let total = body.len();
    let mut decoder = Decoder::new(usize::MAX);
    decoder.push(body);
    let msg = decoder.next_message().map_err(|e| e.status(Side::Request))?;
    let Some(msg) = msg else {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("request body of {total} bytes holds no whole gRPC message"),
        ));
    };
    if decoder.finish().is_err() {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("gRPC message of {} bytes, body carries {total}: one message expected", msg.len()),
        ));
    }
    Ok(msg)
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

/// Formats a `grpc-timeout` value for `d` (the finest unit that fits in the
/// 8 digits the spec allows).
pub fn format_timeout(d: std::time::Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let candidates = [(d.as_nanos(), "n"), (d.as_micros(), "u"), (d.as_millis(), "m"), (d.as_secs() as u128, "S")];
    let (n, unit) = candidates
        .into_iter()
        .find(|(n, _)| *n <= MAX)
        .unwrap_or(((d.as_secs() / 3600).min(MAX as u64) as u128, "H"));
    HeaderValue::try_from(format!("{n}{unit}")).expect("digits and a letter")
}

/// Headers a caller may not set as metadata: HTTP/2 and gRPC own them.
fn reserved_header(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("grpc-")
        || matches!(name, "content-type" | "te" | "user-agent" | "content-length" | "host" | "connection")
}

/// gRPC metadata to HTTP/2 headers: keys are lowercased; values of `-bin`
/// keys are base64-encoded, others must be printable ASCII.
pub fn metadata_to_headers(pairs: &[(String, Vec<u8>)], headers: &mut http::HeaderMap) -> Result<(), Status> {
    use base64::Engine;
    for (key, value) in pairs {
        let key = key.to_ascii_lowercase();
        let bad = |why: &str| Status::new(Code::InvalidArgument, format!("metadata {key:?}: {why}"));
        if reserved_header(&key) {
            return Err(bad("reserved by HTTP/2 or gRPC"));
        }
        let name = http::HeaderName::from_bytes(key.as_bytes()).map_err(|_| bad("not a valid header name"))?;
        let value = if key.ends_with("-bin") {
            HeaderValue::try_from(base64::engine::general_purpose::STANDARD_NO_PAD.encode(value))
        } else {
            HeaderValue::from_bytes(value)
        };
        headers.append(name, value.map_err(|_| bad("value must be printable ASCII (or use a -bin key)"))?);
    }
    Ok(())
}

/// HTTP/2 headers or trailers to gRPC metadata: `-bin` values decoded,
/// gRPC's own and HTTP/2 headers left out.
pub fn headers_to_metadata(headers: &http::HeaderMap) -> Vec<(String, Bytes)> {
    use base64::Engine;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    headers
        .iter()
        .filter(|(k, _)| !reserved_header(k.as_str()))
        .map(|(k, v)| {
            let value = if k.as_str().ends_with("-bin") {
                lenient.decode(v.as_bytes()).map(Bytes::from).unwrap_or_else(|_| Bytes::copy_from_slice(v.as_bytes()))
            } else {
                Bytes::copy_from_slice(v.as_bytes())
            };
            (k.as_str().to_string(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_format_and_parse_back() {
        use std::time::Duration;
        for d in [Duration::from_millis(1500), Duration::from_secs(7200), Duration::from_nanos(10)] {
            let v = format_timeout(d);
            assert!(v.len() <= 9, "{v:?}");
            assert_eq!(parse_timeout(&v), Some(d));
        }
    }

    #[test]
    fn metadata_round_trips_with_binary_values() {
        let pairs = vec![("X-A".to_string(), b"text".to_vec()), ("x-b-bin".to_string(), vec![0, 255, 1])];
        let mut h = http::HeaderMap::new();
        metadata_to_headers(&pairs, &mut h).unwrap();
        h.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        let back = headers_to_metadata(&h);
        assert_eq!(back, vec![("x-a".into(), Bytes::from_static(b"text")), ("x-b-bin".into(), Bytes::from_static(&[0, 255, 1]))]);
        let bad = vec![("x-c".to_string(), vec![0u8])];
        assert_eq!(metadata_to_headers(&bad, &mut h).unwrap_err().code, Code::InvalidArgument);
        let reserved = vec![("grpc-timeout".to_string(), b"1S".to_vec())];
        assert!(metadata_to_headers(&reserved, &mut h).is_err());
    }

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
    fn tracker_counts_messages_across_chunks_and_refuses_big_ones() {
        let mut body = frame_bytes(b"hello").to_vec();
        body.extend_from_slice(&frame_bytes(&[7; 100]));
        let mut t = MessageTracker::new(100);
        for chunk in body.chunks(3) {
            t.feed(chunk).unwrap();
        }
        assert_eq!((t.messages(), t.in_message()), (2, false));
        t.feed(&body[..7]).unwrap();
        assert!(t.in_message());

        // A message over the limit is refused at its prefix; the bytes of
        // the chunk before it are reported valid.
        let mut t = MessageTracker::new(10);
        let mut two = frame_bytes(b"ok").to_vec();
        two.extend_from_slice(&[0, 0, 0, 0, 11]);
        let refused = t.feed(&two).unwrap_err();
        assert_eq!(refused, Refused { valid: 7, error: MessageTooLarge { len: 11, max: 10 } });
        let st = refused.error.status("request");
        assert_eq!(st.code, Code::ResourceExhausted);
        assert_eq!(st.message, "request message of 11 bytes exceeds MaxMessageSize (10 bytes)");
    }

    #[test]
    fn decoder_slices_whole_messages_and_gathers_split_ones() {
        let mut body = frame_bytes(b"one").to_vec();
        body.extend_from_slice(&frame_bytes(b"two"));
        let body = Bytes::from(body);
        let mut d = Decoder::new(10);
        d.push(body.clone());
        let first = d.next_message().unwrap().unwrap();
        assert_eq!(first, &b"one"[..]);
        // Sliced out of the chunk, not copied.
        assert_eq!(first.as_ptr(), body[FRAME_HEADER_LEN..].as_ptr());
        assert_eq!(d.next_message().unwrap().unwrap(), &b"two"[..]);
        assert_eq!(d.next_message().unwrap(), None);
        d.finish().unwrap();

        // Split across chunks: gathered.
        let framed = frame_bytes(b"split");
        d.push(framed.slice(..3));
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.finish(), Err(DecodeError::Truncated { have: 3 }));
        d.push(framed.slice(3..));
        assert_eq!(d.next_message().unwrap().unwrap(), &b"split"[..]);
        d.finish().unwrap();

        // Refused at the prefix: too large, or compressed.
        d.push(Bytes::from_static(&[0, 0, 0, 0, 11]));
        let e = d.next_message().unwrap_err();
        assert_eq!(e, DecodeError::TooLarge(MessageTooLarge { len: 11, max: 10 }));
        assert_eq!(e.status(Side::Response).code, Code::ResourceExhausted);
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[1, 0, 0, 0, 1, 9]));
        let e = d.next_message().unwrap_err();
        assert_eq!((e.status(Side::Request).code, e.status(Side::Response).code), (Code::Unimplemented, Code::Internal));
    }

    #[test]
    fn response_heads_map_to_one_status() {
        use http::StatusCode as H;
        let ok = http::HeaderMap::new();
        assert_eq!(Status::from_response_head(H::OK, &ok), None);
        assert_eq!(Status::from_response_head(H::NOT_FOUND, &ok).unwrap().code, Code::Unimplemented);
        assert_eq!(Status::from_response_head(H::SERVICE_UNAVAILABLE, &ok).unwrap().code, Code::Unavailable);
        assert_eq!(Status::from_response_head(H::UNAUTHORIZED, &ok).unwrap().code, Code::Unauthenticated);
        assert_eq!(Status::from_response_head(H::IM_A_TEAPOT, &ok).unwrap().code, Code::Unknown);
        // A grpc-status in the head wins over the HTTP status.
        let st = Status::new(Code::NotFound, "gone");
        let head = status_trailers(&st);
        assert_eq!(Status::from_response_head(H::OK, &head), Some(st.clone()));
        assert_eq!(Status::from_response_head(H::BAD_GATEWAY, &head), Some(st));
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
