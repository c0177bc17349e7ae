//! Why a database could not be loaded or verified.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// An error loading, checking or reloading a GeoIP database. A corrupt or
/// unsuitable file is always reported here, never by a panic. Each message
/// holds its cause's text, so the cause is not also its `source()` (anyhow's
/// `{:#}` would print it twice).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoIpError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// What the operating system reported.
        error: io::Error,
    },

    /// The file or buffer holds no bytes at all.
    #[error("database is empty (0 bytes)")]
    Empty,

    /// The bytes are not a structurally valid MaxMind DB (no metadata, bad
    /// metadata, a search tree that does not fit, ...).
    #[error("not a valid MaxMind DB: {0}")]
    Malformed(maxminddb::MaxMindDbError),

    /// A valid MaxMind DB, but not one with City or Country records (for
    /// example an ASN or ISP database).
    #[error("database type {database_type:?} is not a City or Country database")]
    UnsupportedType {
        /// The `database_type` from the file's metadata.
        database_type: String,
    },

    /// One of the probe lookups done on load could not be decoded, so the
    /// data section is corrupt or not shaped like City/Country records.
    #[error("probe lookup of {address} failed: {error}")]
    Probe {
        /// The probe address whose record failed to decode.
        address: IpAddr,
        /// The decoder's complaint.
        error: maxminddb::MaxMindDbError,
    },

    /// [`GeoDb::verify_full`](crate::GeoDb::verify_full) found a problem.
    #[error("full verification failed: {0}")]
    Verify(maxminddb::MaxMindDbError),
}
