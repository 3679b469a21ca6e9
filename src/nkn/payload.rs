//! The `payloads.Payload` layer (§5.2–§5.4): what a message means to the
//! two end points.

use bytes::Bytes;
use prost::Message as _;

use super::{NknError, Result, MESSAGE_ID_SIZE};
use crate::proto::nkn::payloads::{Payload, PayloadType, TextData};

/// A fresh random 8-byte message ID.
pub fn new_message_id() -> Bytes {
    Bytes::copy_from_slice(&rand::random::<[u8; MESSAGE_ID_SIZE]>())
}

/// A new BINARY message.
pub fn binary(message_id: Bytes, data: Bytes, no_reply: bool) -> Payload {
    Payload { r#type: PayloadType::Binary as i32, message_id, data, reply_to_id: Bytes::new(), no_reply }
}

/// A new TEXT message (`data` is a serialized `TextData`).
pub fn text(message_id: Bytes, text: &str, no_reply: bool) -> Payload {
    Payload { r#type: PayloadType::Text as i32, message_id, data: text_data(text), reply_to_id: Bytes::new(), no_reply }
}

/// An ACK answering `reply_to_id` (empty `message_id`).
pub fn ack(reply_to_id: Bytes) -> Payload {
    Payload { r#type: PayloadType::Ack as i32, reply_to_id, ..Default::default() }
}

/// A reply answering `reply_to_id` with binary data (empty `message_id`).
pub fn reply_binary(reply_to_id: Bytes, data: Bytes) -> Payload {
    Payload { r#type: PayloadType::Binary as i32, reply_to_id, data, ..Default::default() }
}

/// A reply answering `reply_to_id` with text (empty `message_id`).
pub fn reply_text(reply_to_id: Bytes, text: &str) -> Payload {
    Payload { r#type: PayloadType::Text as i32, reply_to_id, data: text_data(text), ..Default::default() }
}

/// Serialized `TextData{text}`.
pub fn text_data(text: &str) -> Bytes {
    TextData { text: text.to_string() }.encode_to_vec().into()
}

/// Serializes a payload.
pub fn encode(p: &Payload) -> Bytes {
    p.encode_to_vec().into()
}

/// Parses a payload.
pub fn decode(bytes: &[u8]) -> Result<Payload> {
    Ok(Payload::decode(bytes)?)
}

/// The application data of a payload: raw bytes for BINARY, the UTF-8
/// text for TEXT (parsed from `TextData`), empty for ACK, the packet for
/// SESSION. Unknown types are refused.
pub fn data_of(p: &Payload) -> Result<Bytes> {
    match PayloadType::try_from(p.r#type) {
        Ok(PayloadType::Text) => {
            let t = TextData::decode(p.data.as_ref())?;
            Ok(Bytes::from(t.text.into_bytes()))
        }
        Ok(PayloadType::Binary | PayloadType::Ack | PayloadType::Session) => Ok(p.data.clone()),
        Err(_) => Err(NknError::Malformed("payload type")),
    }
}

/// Whether a payload answers an earlier message (§8.4): an ACK, or any
/// payload with a non-empty `reply_to_id`.
pub fn is_response(p: &Payload) -> bool {
    p.r#type == PayloadType::Ack as i32 || !p.reply_to_id.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Bytes {
        Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8])
    }

    #[test]
    fn vector_12_2_payloads() {
        let bin = binary(id(), Bytes::from_static(b"hello nkn"), false);
        assert_eq!(hex::encode(encode(&bin)), "120801020304050607081a0968656c6c6f206e6b6e");
        let t = text(id(), "hi", false);
        assert_eq!(hex::encode(encode(&t)), "0801120801020304050607081a040a026869");
        let a = ack(id());
        assert_eq!(hex::encode(encode(&a)), "080222080102030405060708");

        let d = decode(&encode(&t)).unwrap();
        assert_eq!(data_of(&d).unwrap().as_ref(), b"hi");
        assert!(!is_response(&d));
        let d = decode(&encode(&a)).unwrap();
        assert!(is_response(&d));
        assert!(data_of(&d).unwrap().is_empty());
        let r = reply_binary(id(), Bytes::from_static(b"x"));
        assert!(r.message_id.is_empty());
        assert!(is_response(&r));
        let r = reply_text(id(), "yo");
        assert_eq!(data_of(&decode(&encode(&r)).unwrap()).unwrap().as_ref(), b"yo");
        assert_eq!(new_message_id().len(), 8);
        let bad = Payload { r#type: 9, ..Default::default() };
        assert!(data_of(&bad).is_err());
    }
}
