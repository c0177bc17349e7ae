//! A published revision of the fleet's routing table: its number, the
//! sha256 of the file, the object holding it, who published it from where
//! and when, the rows it holds. Plain data: serialized as the JSON value of
//! the `current` and `rev.N` keys.

use std::fmt;
use std::str::FromStr;

use geoedge_routing::raw::RawTable;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A revision number: 1 for the first publish, one more for each after.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision after this one.
    pub fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The sha256 of a routing.db file, as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let d = Sha256::digest(bytes);
        Sha256Digest(d.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Sha256Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Sha256Digest(s.to_owned()))
        } else {
            Err(format!("{s:?} is not a sha256 (64 lowercase hex digits)"))
        }
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Sha256Digest> for String {
    fn from(d: Sha256Digest) -> String {
        d.0
    }
}

/// How many rows of each table a routing.db holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RowCounts {
    /// `backends` rows (deleted ones included).
    pub backends: usize,
    /// `regions` rows (0 when the table is absent: the built-in regions).
    pub regions: usize,
    /// `country_regions` rows (0 when absent: the built-in map).
    pub countries: usize,
    /// `wg_peers` rows.
    pub wg_peers: usize,
}

impl RowCounts {
    /// The counts of a loaded table.
    pub fn of(raw: &RawTable) -> Self {
        RowCounts {
            backends: raw.backends.len(),
            regions: raw.regions.as_ref().map_or(0, Vec::len),
            countries: raw.country_regions.as_ref().map_or(0, Vec::len),
            wg_peers: raw.wg_peers.len(),
        }
    }
}

impl fmt::Display for RowCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} backends, {} regions, {} countries, {} wg_peers",
            self.backends, self.regions, self.countries, self.wg_peers
        )
    }
}

/// One revision's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// Its number.
    pub revision: Revision,
    /// The sha256 of the file.
    pub sha256: Sha256Digest,
    /// The file's size in bytes.
    pub size: u64,
    /// The name of the object holding the file ([`object_name`]).
    pub object: String,
    /// Who published it (the publisher's user name).
    pub author: String,
    /// The host it was published from.
    pub host: String,
    /// When, in seconds since the Unix epoch.
    pub time: u64,
    /// The publisher's message (may be empty).
    pub message: String,
    /// Its rows.
    pub rows: RowCounts,
    /// For a rollback: the revision whose file this one makes current again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restores: Option<Revision>,
}

impl RevisionInfo {
    /// The record as the JSON value of a key.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A record read from a key; `None` for a value that is not one.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a revision record: {e}"))
    }

    /// "revision 12 (alice@ops1, 2026-12-06T15:00:00Z: drain fra-2)".
    pub fn describe(&self) -> String {
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.time),
        );
        let mut s = format!(
            "revision {} ({}@{}, {when}",
            self.revision, self.author, self.host
        );
        if !self.message.is_empty() {
            s.push_str(&format!(": {:?}", self.message));
        }
        s.push(')');
        s
    }
}

/// The object name of the file with digest `sha256`: one object per
/// content, so publishing the same file twice stores it once.
pub fn object_name(sha256: &Sha256Digest) -> String {
    format!("routing-{sha256}.db")
}

#[cfg(test)]
mod tests;
