//! WireGuard keys: Curve25519 private and public keys in the `wg` tool's
//! base64 form (and the hex form of the configuration socket), generation
//! from the OS's random source, and derivation of a public key.
//!
//! A key is exactly 32 bytes; an all-zero key is refused (it is what an
//! unset key looks like and never a real one). Private keys never print
//! themselves: their `Debug` is redacted and they have no `Display`; their
//! bytes are overwritten with zeros when they are dropped, as are the
//! decoded buffers they were parsed from.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519;
use zeroize::{Zeroize, Zeroizing};

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64 (or, for [`PublicKey::from_hex`], not hex).
    #[error("not a base64 WireGuard key")]
    Malformed,
    /// Decoded, but not 32 bytes.
    #[error("a WireGuard key is 32 bytes, this one is {0}")]
    WrongLength(usize),
    /// All 32 bytes are zero.
    #[error("the all-zero key is not a valid WireGuard key")]
    AllZero,
    /// The OS random source failed while generating a key.
    #[error("no randomness available: {0}")]
    Random(String),
}

fn decode_base64(s: &str) -> Result<[u8; 32], KeyError> {
    let bytes = Zeroizing::new(STANDARD.decode(s.trim()).map_err(|_| KeyError::Malformed)?);
    to_key(&bytes)
}

fn decode_hex(s: &str) -> Result<[u8; 32], KeyError> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::Malformed);
    }
    let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
            .collect(),
    );
    to_key(&bytes)
}

fn to_key(bytes: &[u8]) -> Result<[u8; 32], KeyError> {
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::WrongLength(bytes.len()))?;
    if key == [0; 32] {
        return Err(KeyError::AllZero);
    }
    Ok(key)
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A peer's (or our own) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// From bytes known to be a real key (decrypted from a handshake).
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the hex form used on the configuration socket.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_hex(s).map(Self)
    }

    /// The hex form used on the configuration socket.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// boringtun's form.
    pub fn to_x25519(&self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl TryFrom<[u8; 32]> for PublicKey {
    type Error = KeyError;
    /// The key with these bytes (from a key already checked elsewhere, such
    /// as routing.db's `geoedge_routing::PeerKey`); the all-zero key is
    /// refused.
    fn try_from(bytes: [u8; 32]) -> Result<Self, KeyError> {
        to_key(&bytes).map(Self)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    /// Parses the `wg` tool's base64 form.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_base64(s).map(Self)
    }
}

impl fmt::Display for PublicKey {
    /// The `wg` tool's base64 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Our private key. Its bytes are reachable only on purpose
/// ([`PrivateKey::to_base64`], [`PrivateKey::to_x25519`]): it is never
/// printed by `Debug` and has no `Display`, and its bytes are zeroed when
/// it is dropped.
#[derive(Clone, PartialEq, Eq)]
#[repr(transparent)]
pub struct PrivateKey([u8; 32]);

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PrivateKey {
    /// A new key from the OS's random source, clamped as `wg genkey` does.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *key).map_err(|e| KeyError::Random(e.to_string()))?;
        key[0] &= 248;
        key[31] &= 127;
        key[31] |= 64;
        to_key(&*key).map(Self)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.to_x25519()).to_bytes())
    }

    /// The `wg` tool's base64 form (for `geoedge wg genkey`; handle with care).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The hex form used on the configuration socket.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the hex form used on the configuration socket.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_hex(s).map(Self)
    }

    /// boringtun's form.
    pub fn to_x25519(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    /// Parses the `wg` tool's base64 form.
    fn from_str(s: &str) -> Result<Self, KeyError> {
        decode_base64(s).map(Self)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // An arbitrary 32-byte key in base64 (test data only).
    const PRIV: &str = "YNqHbfBQKaGvzefSSuufuOKlSSKu5Ic8Sg1q/8z1tXY=";

    #[test]
    fn base64_round_trip_and_public_key_derivation() {
        let k: PrivateKey = PRIV.parse().unwrap();
        assert_eq!(k.to_base64(), PRIV);
        let p = k.public_key();
        assert_eq!(p.to_string().parse::<PublicKey>().unwrap(), p);
        assert_eq!(PublicKey::from_hex(&p.to_hex()).unwrap(), p);
        assert_eq!(PrivateKey::from_hex(&k.to_hex()).unwrap(), k);
        assert!(!format!("{k:?}").contains(PRIV));
    }

    #[test]
    fn malformed_wrong_length_and_zero_keys_are_refused() {
        assert_eq!("not a key!".parse::<PublicKey>(), Err(KeyError::Malformed));
        assert_eq!("".parse::<PublicKey>(), Err(KeyError::WrongLength(0)));
        assert_eq!(
            STANDARD.encode([7u8; 31]).parse::<PublicKey>(),
            Err(KeyError::WrongLength(31))
        );
        assert_eq!(
            STANDARD.encode([7u8; 33]).parse::<PublicKey>(),
            Err(KeyError::WrongLength(33))
        );
        assert_eq!(
            STANDARD.encode([0u8; 32]).parse::<PrivateKey>(),
            Err(KeyError::AllZero)
        );
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyError::Malformed));
        assert_eq!(PublicKey::from_hex("abc"), Err(KeyError::Malformed));
        assert_eq!(
            PublicKey::from_hex(&"00".repeat(32)),
            Err(KeyError::AllZero)
        );
        assert_eq!(PublicKey::try_from([0u8; 32]), Err(KeyError::AllZero));
        let k = PrivateKey::generate().unwrap().public_key();
        assert_eq!(PublicKey::try_from(*k.as_bytes()), Ok(k));
    }

    #[test]
    #[allow(unsafe_code)] // reads the bytes a dropped key leaves behind
    fn a_dropped_private_key_leaves_zeros_behind() {
        let mut slot = std::mem::MaybeUninit::new(PRIV.parse::<PrivateKey>().unwrap());
        // SAFETY: `slot` holds a key, dropped once here and never used as a
        // key again; its memory stays allocated, and `PrivateKey` is a
        // transparent `[u8; 32]`, so its bytes can be read back.
        let left = unsafe {
            std::ptr::drop_in_place(slot.as_mut_ptr());
            std::ptr::read(slot.as_ptr().cast::<[u8; 32]>())
        };
        assert_eq!(left, [0u8; 32]);
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a, b);
        let bytes = STANDARD.decode(a.to_base64()).unwrap();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 128, 0);
        assert_eq!(bytes[31] & 64, 64);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,64}") {
            let _ = s.parse::<PublicKey>();
            let _ = PublicKey::from_hex(&s);
        }
    }
}
