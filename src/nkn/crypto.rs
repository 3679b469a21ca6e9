//! End-to-end encryption of payloads (§6) and the `payloads.Message`
//! envelope (§5.1).
//!
//! `crypto_box_afternm` with a precomputed key is exactly
//! `crypto_secretbox` (XSalsa20-Poly1305, tag first), so one primitive
//! serves both the single-destination scheme and the multi-destination key
//! wrapping.

use bytes::Bytes;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use prost::Message as _;

use super::{NknError, Result};
use crate::proto::nkn::payloads::Message as Envelope;

/// NaCl nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;

/// `crypto_secretbox(plaintext, nonce, key)`: tag || ciphertext.
pub fn seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> Vec<u8> {
    XSalsa20Poly1305::new(key.into()).encrypt(nonce.into(), plaintext).expect("secretbox seal cannot fail")
}

/// `crypto_secretbox_open`.
pub fn open(key: &[u8; 32], nonce: &[u8; 24], boxed: &[u8]) -> Result<Vec<u8>> {
    if boxed.len() < TAG_LEN {
        return Err(NknError::Decrypt);
    }
    XSalsa20Poly1305::new(key.into()).decrypt(nonce.into(), boxed).map_err(|_| NknError::Decrypt)
}

/// A random 24-byte nonce.
pub fn random_nonce() -> [u8; 24] {
    rand::random()
}

/// The envelope of an unencrypted payload.
pub fn plain_envelope(payload: &[u8]) -> Envelope {
    Envelope { payload: Bytes::copy_from_slice(payload), encrypted: false, ..Default::default() }
}

/// Single-destination scheme (§6.2): `secretbox(payload, nonce, k)`.
pub fn encrypt_single(shared_key: &[u8; 32], nonce: &[u8; 24], payload: &[u8]) -> Envelope {
    Envelope {
        payload: seal(shared_key, nonce, payload).into(),
        encrypted: true,
        nonce: Bytes::copy_from_slice(nonce),
        encrypted_key: Bytes::new(),
    }
}

/// Multi-destination scheme (§6.3): the payload is encrypted once with a
/// message key `key` and `msg_nonce`; for each destination `(k_d,
/// key_nonce_d)` the message key is boxed with the shared key `k_d`. One
/// envelope per destination, in order.
pub fn encrypt_multi(
    payload: &[u8],
    key: &[u8; 32],
    msg_nonce: &[u8; 24],
    destinations: &[([u8; 32], [u8; 24])],
) -> Vec<Envelope> {
    let enc: Bytes = seal(key, msg_nonce, payload).into();
    destinations
        .iter()
        .map(|(shared, key_nonce)| {
            let mut nonce = Vec::with_capacity(2 * NONCE_LEN);
            nonce.extend_from_slice(key_nonce);
            nonce.extend_from_slice(msg_nonce);
            Envelope {
                payload: enc.clone(),
                encrypted: true,
                nonce: nonce.into(),
                encrypted_key: seal(shared, key_nonce, key).into(),
            }
        })
        .collect()
}

/// Opens an envelope and returns the serialized `Payload`. `shared_key` is
/// only called for encrypted envelopes (it derives `k(src)`); unencrypted
/// envelopes are refused unless `allow_unencrypted`.
pub fn open_envelope(
    env: &Envelope,
    allow_unencrypted: bool,
    shared_key: impl FnOnce() -> Result<[u8; 32]>,
) -> Result<Bytes> {
    if !env.encrypted {
        return if allow_unencrypted { Ok(env.payload.clone()) } else { Err(NknError::Unencrypted) };
    }
    let k = shared_key()?;
    if env.encrypted_key.is_empty() {
        let nonce: &[u8; 24] = env.nonce.as_ref().try_into().map_err(|_| NknError::Malformed("nonce length"))?;
        Ok(open(&k, nonce, &env.payload)?.into())
    } else {
        if env.nonce.len() != 2 * NONCE_LEN {
            return Err(NknError::Malformed("nonce length"));
        }
        let key_nonce: &[u8; 24] = env.nonce[..NONCE_LEN].try_into().unwrap();
        let msg_nonce: &[u8; 24] = env.nonce[NONCE_LEN..].try_into().unwrap();
        let msg_key: [u8; 32] =
            open(&k, key_nonce, &env.encrypted_key)?.try_into().map_err(|_| NknError::Malformed("encrypted key"))?;
        Ok(open(&msg_key, msg_nonce, &env.payload)?.into())
    }
}

/// Serializes an envelope.
pub fn encode_envelope(env: &Envelope) -> Bytes {
    env.encode_to_vec().into()
}

/// Parses an envelope.
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope> {
    Ok(Envelope::decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nkn::identity::tests::{a, b, h32, SHARED_AB};

    const BINARY: &str = "120801020304050607081a0968656c6c6f206e6b6e";

    fn nonce_seq() -> [u8; 24] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn vector_12_3_single() {
        let k = a().shared_key(&b().public_key()).unwrap();
        assert_eq!(k, h32(SHARED_AB));
        let plain = hex::decode(BINARY).unwrap();
        let env = encrypt_single(&k, &nonce_seq(), &plain);
        assert_eq!(hex::encode(&env.payload), "3eea6452ff9c7f8554c958d23b3dd94cde105be8bec3cf085fe4a9b8c5b4e820127da2abeb");
        let bytes = encode_envelope(&env);
        assert_eq!(
            hex::encode(&bytes),
            "0a253eea6452ff9c7f8554c958d23b3dd94cde105be8bec3cf085fe4a9b8c5b4e820127da2abeb10011a18000102030405060708090a0b0c0d0e0f1011121314151617"
        );
        // B decrypts with k(B, A).
        let got = open_envelope(&decode_envelope(&bytes).unwrap(), false, || b().shared_key(&a().public_key())).unwrap();
        assert_eq!(hex::encode(got), BINARY);
        // Tampering fails.
        let mut bad = env.clone();
        let mut p = bad.payload.to_vec();
        p[20] ^= 1;
        bad.payload = p.into();
        assert!(matches!(open_envelope(&bad, false, || Ok(k)), Err(NknError::Decrypt)));
        // A wrong key fails.
        assert!(open_envelope(&env, false, || Ok([7u8; 32])).is_err());
        // Short nonce.
        let mut short = env.clone();
        short.nonce = short.nonce.slice(..23);
        assert!(open_envelope(&short, false, || Ok(k)).is_err());
    }

    #[test]
    fn vector_12_4_multi() {
        let k = a().shared_key(&b().public_key()).unwrap();
        let plain = hex::decode(BINARY).unwrap();
        let envs = encrypt_multi(&plain, &[0x11; 32], &[0x22; 24], &[(k, [0x33; 24])]);
        assert_eq!(envs.len(), 1);
        let e = &envs[0];
        assert_eq!(hex::encode(&e.payload), "e2d83c793b708087cd6d2484ecf26867a716b626fac128a5d1d3835d5d8a7c48829e0e8281");
        assert_eq!(
            hex::encode(&e.encrypted_key),
            "e34f89d75defd63f4cee274f8f311b8965c13294203e09ff845ba638b2cd7be9d9af400814f1d5c0d64fcadd6cb649fe"
        );
        let mut n = vec![0x33; 24];
        n.extend([0x22; 24]);
        assert_eq!(e.nonce.as_ref(), &n[..]);
        assert!(e.encrypted);
        let got = open_envelope(e, false, || b().shared_key(&a().public_key())).unwrap();
        assert_eq!(hex::encode(got), BINARY);
        let mut bad = e.clone();
        bad.nonce = bad.nonce.slice(..24);
        assert!(open_envelope(&bad, false, || Ok(k)).is_err());
    }

    #[test]
    fn unencrypted() {
        let env = plain_envelope(b"xyz");
        assert!(matches!(open_envelope(&env, false, || unreachable!()), Err(NknError::Unencrypted)));
        assert_eq!(open_envelope(&env, true, || unreachable!()).unwrap().as_ref(), b"xyz");
        assert_eq!(hex::encode(encode_envelope(&env)), "0a0378797a");
    }
}
