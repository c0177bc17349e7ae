//! A WireGuard peer's public key as routing.db stores it: 32 bytes written in
//! the `wg` tool's base64 form.
//!
//! Only the encoding is checked here (base64, 32 bytes, not all zero, the
//! same rules and messages as the WireGuard crate's own key type), with no
//! cryptography, so the routing core builds without the WireGuard crates.
//! The edge turns a [`PeerKey`] into the WireGuard crate's key with
//! `geoedge_wireguard::PublicKey::try_from(key.to_bytes())`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Why a `wg_peers.public_key` cell is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerKeyError {
    /// Not base64.
    #[error("not a base64 WireGuard key")]
    Malformed,
    /// Decoded, but not 32 bytes.
    #[error("a WireGuard key is 32 bytes, this one is {0}")]
    WrongLength(usize),
    /// All 32 bytes are zero (what an unset key looks like, never a real one).
    #[error("the all-zero key is not a valid WireGuard key")]
    AllZero,
}

/// A WireGuard peer's public key: 32 bytes, never all zero. Ordered and
/// hashed by its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey([u8; 32]);

impl PeerKey {
    /// The key with these bytes; the all-zero key is refused.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, PeerKeyError> {
        if bytes == [0; 32] {
            return Err(PeerKeyError::AllZero);
        }
        Ok(Self(bytes))
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 32 bytes, by value (for the WireGuard crate's key type).
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

impl FromStr for PeerKey {
    type Err = PeerKeyError;
    /// Parses the `wg` tool's base64 form (surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, PeerKeyError> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| PeerKeyError::Malformed)?;
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| PeerKeyError::WrongLength(bytes.len()))?;
        Self::from_bytes(bytes)
    }
}

impl fmt::Display for PeerKey {
    /// The `wg` tool's base64 form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn base64_round_trip() {
        let k: PeerKey = KEY.parse().unwrap();
        assert_eq!(k.to_string(), KEY);
        assert_eq!(format!(" {KEY}\n").parse::<PeerKey>(), Ok(k));
        assert_eq!(PeerKey::from_bytes(k.to_bytes()), Ok(k));
        assert_eq!(format!("{k:?}"), format!("PeerKey({KEY})"));
    }

    #[test]
    fn malformed_wrong_length_and_zero_keys_are_refused() {
        assert_eq!(
            "not a key!".parse::<PeerKey>(),
            Err(PeerKeyError::Malformed)
        );
        assert_eq!("".parse::<PeerKey>(), Err(PeerKeyError::WrongLength(0)));
        assert_eq!(
            STANDARD.encode([7u8; 31]).parse::<PeerKey>(),
            Err(PeerKeyError::WrongLength(31))
        );
        assert_eq!(
            STANDARD.encode([7u8; 33]).parse::<PeerKey>(),
            Err(PeerKeyError::WrongLength(33))
        );
        assert_eq!(
            STANDARD.encode([0u8; 32]).parse::<PeerKey>(),
            Err(PeerKeyError::AllZero)
        );
        assert_eq!(PeerKey::from_bytes([0; 32]), Err(PeerKeyError::AllZero));
    }

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in ".{0,64}", bytes in any::<[u8; 32]>()) {
            let _ = s.parse::<PeerKey>();
            if let Ok(k) = PeerKey::from_bytes(bytes) {
                prop_assert_eq!(k.to_string().parse::<PeerKey>(), Ok(k));
            }
        }
    }
}
