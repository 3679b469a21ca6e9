//! Identity and addressing (§1) and the key conversion of §6.1.

use std::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use salsa20::cipher::consts::U10;
use sha2::{Digest, Sha256, Sha512};

use super::{NknError, Result};

/// Length of a seed, a public key and a shared key.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An NKN identity: an Ed25519 key pair from a 32-byte seed, with its
/// Curve25519 secret for the end-to-end boxes.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    public: [u8; 32],
    curve_secret: [u8; 32],
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("public", &hex::encode(self.public)).finish_non_exhaustive()
    }
}

impl Identity {
    /// The identity of a 32-byte seed (RFC 8032 key generation).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&seed);
        let public = signing.verifying_key().to_bytes();
        Identity { signing, public, curve_secret: curve25519_secret_from_seed(&seed) }
    }

    /// A fresh random identity.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    /// The 32-byte seed (keep it secret).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The public key as 64 lowercase hex characters.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public)
    }

    /// The client address for `identifier` (empty: the bare public key).
    pub fn address(&self, identifier: &str) -> String {
        Address { identifier: identifier.to_string(), public_key: self.public }.to_string()
    }

    /// The Curve25519 secret key: `clamp(SHA-512(seed)[0..32])`.
    pub fn curve_secret(&self) -> [u8; 32] {
        self.curve_secret
    }

    /// The Curve25519 public key (Edwards→Montgomery of the public key).
    pub fn curve_public(&self) -> [u8; 32] {
        ed25519_pk_to_curve25519(&self.public).expect("own key is valid")
    }

    /// Ed25519 signature of `msg` (for NKN, `msg` is always a 32-byte digest).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The precomputed box key with a peer (`crypto_box_beforenm`); symmetric.
    pub fn shared_key(&self, peer_public: &[u8; 32]) -> Result<[u8; 32]> {
        let peer_curve = ed25519_pk_to_curve25519(peer_public)?;
        box_beforenm(&peer_curve, &self.curve_secret)
    }
}

/// Verifies an Ed25519 signature by `public_key` over `msg`.
pub fn verify(public_key: &[u8; 32], msg: &[u8], signature: &[u8]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(public_key) else { return false };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else { return false };
    vk.verify(msg, &sig).is_ok()
}

/// libsodium `crypto_sign_ed25519_sk_to_curve25519`, from the seed.
pub fn curve25519_secret_from_seed(seed: &[u8; 32]) -> [u8; 32] {
    let h = Sha512::digest(seed);
    let mut sk = [0u8; 32];
    sk.copy_from_slice(&h[..32]);
    sk[0] &= 248;
    sk[31] &= 127;
    sk[31] |= 64;
    sk
}

/// libsodium `crypto_sign_ed25519_pk_to_curve25519`: `u = (1+y)/(1−y)`.
/// Like libsodium, refuses points that do not decode, have small order or
/// lie outside the prime-order subgroup.
pub fn ed25519_pk_to_curve25519(pk: &[u8; 32]) -> Result<[u8; 32]> {
    let point = CompressedEdwardsY(*pk).decompress().ok_or(NknError::InvalidPublicKey)?;
    if point.is_small_order() || !point.is_torsion_free() {
        return Err(NknError::InvalidPublicKey);
    }
    Ok(point.to_montgomery().to_bytes())
}

/// NaCl `crypto_box_beforenm`: `HSalsa20(X25519(sk, pk), 0^16)`.
pub fn box_beforenm(peer_curve_public: &[u8; 32], curve_secret: &[u8; 32]) -> Result<[u8; 32]> {
    let dh = MontgomeryPoint(*peer_curve_public).mul_clamped(*curve_secret).to_bytes();
    if dh == [0u8; 32] {
        return Err(NknError::InvalidPublicKey);
    }
    let k = salsa20::hsalsa::<U10>(&dh.into(), &[0u8; 16].into());
    Ok(k.into())
}

/// `sha256(address)`: the client ID the node routes by (§1).
pub fn client_id(address: &str) -> [u8; 32] {
    Sha256::digest(address.as_bytes()).into()
}

/// A parsed client address `[identifier.]hexpubkey`. The identifier may
/// contain dots; the public key is the last segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Identifier (empty for a bare public key).
    pub identifier: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
}

impl Address {
    /// Parses and validates an address: the last segment must be 64 hex
    /// characters (lower or upper case accepted; [`Display`](fmt::Display)
    /// always emits lowercase). Names (shorter last segments) are refused:
    /// resi never resolves names.
    pub fn parse(s: &str) -> Result<Self> {
        let (identifier, pk) = match s.rfind('.') {
            Some(i) => (&s[..i], &s[i + 1..]),
            None => ("", s),
        };
        if pk.len() != 64 {
            return Err(NknError::InvalidAddress(s.to_string(), "public key must be 64 hex characters"));
        }
        let mut public_key = [0u8; 32];
        hex::decode_to_slice(pk, &mut public_key)
            .map_err(|_| NknError::InvalidAddress(s.to_string(), "public key is not hex"))?;
        Ok(Address { identifier: identifier.to_string(), public_key })
    }

    /// `sha256` of the canonical address string.
    pub fn client_id(&self) -> [u8; 32] {
        client_id(&self.to_string())
    }

    /// If the identifier starts with a MultiClient prefix `__i__`, the index
    /// and the address without the prefix (§1, §9).
    pub fn split_subclient(&self) -> Option<(usize, Address)> {
        let (first, rest) = match self.identifier.find('.') {
            Some(i) => (&self.identifier[..i], &self.identifier[i + 1..]),
            None => (self.identifier.as_str(), ""),
        };
        let digits = first.strip_prefix("__")?.strip_suffix("__")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let i = digits.parse().ok()?;
        Some((i, Address { identifier: rest.to_string(), public_key: self.public_key }))
    }

    /// This address with the sub-client prefix `__i__.` added.
    pub fn with_subclient(&self, i: usize) -> Address {
        let identifier =
            if self.identifier.is_empty() { format!("__{i}__") } else { format!("__{i}__.{}", self.identifier) };
        Address { identifier, public_key: self.public_key }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.identifier.is_empty() {
            write!(f, "{}", hex::encode(self.public_key))
        } else {
            write!(f, "{}.{}", self.identifier, hex::encode(self.public_key))
        }
    }
}

impl std::str::FromStr for Address {
    type Err = NknError;
    fn from_str(s: &str) -> Result<Self> {
        Address::parse(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn h32(s: &str) -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).unwrap();
        b
    }

    pub(crate) const SEED_A: &str = "039e481266e5a05168c1d834a94db512dbc235877f150c5a3cc1e3903662d673";
    pub(crate) const SEED_B: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    pub(crate) const PK_A: &str = "f444c54d74e46fd8499696fcade6bc778908a978db7a229de496b94e1d66f9bf";
    pub(crate) const PK_B: &str = "4cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29";
    pub(crate) const SHARED_AB: &str = "668f591f94d3448a533d1d523f68ead296c5ec86ba7b0c1067e1f30a7b423959";

    pub(crate) fn a() -> Identity {
        Identity::from_seed(h32(SEED_A))
    }
    pub(crate) fn b() -> Identity {
        Identity::from_seed(h32(SEED_B))
    }

    #[test]
    fn vector_12_1_keys() {
        let (a, b) = (a(), b());
        assert_eq!(a.public_key_hex(), PK_A);
        assert_eq!(b.public_key_hex(), PK_B);
        assert_eq!(hex::encode(a.curve_secret()), "307fca69a512f65593510c816416e53250ab5f2da89bc278331a9e612ebdae54");
        assert_eq!(hex::encode(a.curve_public()), "cc59b52b0eedd231fecfb1f3bac2d7bf92fbf05ba13e5624beeeca249e8c7043");
        assert_eq!(hex::encode(b.curve_secret()), "f068e2f7ccc3eee220065e1dc937d34d548ec59be6488fea5ae1397e63f81c52");
        assert_eq!(hex::encode(b.curve_public()), "d92f5eeaa24fd4e66221c770f704a5e2639a476bab82cfec40bd2874abeb481f");
        assert_eq!(hex::encode(a.shared_key(&b.public_key()).unwrap()), SHARED_AB);
        assert_eq!(hex::encode(b.shared_key(&a.public_key()).unwrap()), SHARED_AB);
        assert_eq!(
            hex::encode(client_id(&a.address("__0__"))),
            "18b05cb58f4b78910eadef39c50fbcbcb5dfbf3bb5c95d84f04c27bf3b3d19d3"
        );
        assert_eq!(a.seed(), h32(SEED_A));
    }

    #[test]
    fn addresses() {
        let a = a();
        assert_eq!(a.address(""), PK_A);
        assert_eq!(a.address("gw1"), format!("gw1.{PK_A}"));
        let p = Address::parse(&format!("x.y.{}", PK_A.to_uppercase())).unwrap();
        assert_eq!(p.identifier, "x.y");
        assert_eq!(p.public_key, a.public_key());
        assert_eq!(p.to_string(), format!("x.y.{PK_A}"));
        assert!(Address::parse("gw1.alice").is_err());
        assert!(Address::parse(&format!("gw1.{}", &PK_A[..63])).is_err());
        assert!(Address::parse(&format!("gw1.{}g", &PK_A[..63])).is_err());
        assert!(Address::parse("").is_err());

        let base = Address::parse(&format!("gw1.{PK_A}")).unwrap();
        let sub = base.with_subclient(3);
        assert_eq!(sub.to_string(), format!("__3__.gw1.{PK_A}"));
        assert_eq!(sub.split_subclient(), Some((3, base.clone())));
        let bare = Address::parse(PK_A).unwrap();
        assert_eq!(bare.with_subclient(0).to_string(), format!("__0__.{PK_A}"));
        assert_eq!(bare.with_subclient(0).split_subclient(), Some((0, bare.clone())));
        assert_eq!(base.split_subclient(), None);
        assert_eq!(Address::parse(&format!("__x__.{PK_A}")).unwrap().split_subclient(), None);
        assert_eq!(Address::parse(&format!("____.{PK_A}")).unwrap().split_subclient(), None);
    }

    #[test]
    fn invalid_points_refused() {
        // Identity point (y = 1) has small order.
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(ed25519_pk_to_curve25519(&id).is_err());
        assert!(a().shared_key(&id).is_err());
        // A y ≥ p that fails to decode.
        assert!(ed25519_pk_to_curve25519(&[0xff; 32]).is_err());
    }

    #[test]
    fn sign_verify() {
        let a = a();
        let sig = a.sign(b"digest");
        assert!(verify(&a.public_key(), b"digest", &sig));
        assert!(!verify(&a.public_key(), b"digesT", &sig));
        assert!(!verify(&b().public_key(), b"digest", &sig));
        assert!(!verify(&a.public_key(), b"digest", &sig[..63]));
        let g = Identity::generate();
        assert_ne!(g.public_key(), a.public_key());
    }
}
