//! GeoIP for geoedge: MaxMind DB files (GeoIP2/GeoLite2 City and Country,
//! DB-IP City Lite) held in memory, looked up without allocation, and
//! replaced atomically when the file changes.
//!
//! * [`GeoDb`] is one database read fully into memory and sanity-checked on
//!   load; [`GeoDb::lookup`] answers a [`Lookup`] without touching the heap.
//! * [`GeoIp`] is the live holder used on the per-connection path: lookups
//!   never wait for a reload, and counters feed the metrics endpoint.
//! * [`watch`] detects changes to a file (shared with the routing crate) and
//!   [`spawn_reloader`] uses it to swap in a new database when the file
//!   changes, keeping the old one when the new file is bad.
//! * [`regular`] opens data files without blocking on a FIFO or device
//!   put in their place (shared with the routing crate and the binary).
//! * [`sample`] describes the small committed sample database
//!   ([`SAMPLE_MMDB`]); the `fixture-writer` feature adds the `fixture`
//!   module, which builds such databases.
//!
//! Features: without any, the crate is only the geographic vocabulary
//! ([`location`]) and the [`sample`] table, with no dependency beyond serde
//! and thiserror; this is what the routing core's sans-IO build uses.
//! `files` adds [`regular`] and [`watch`] (libc, notify); `mmdb` (the
//! default) adds the reader, the live holder and the reloader (maxminddb).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "mmdb")]
pub mod db;
#[cfg(feature = "mmdb")]
pub mod error;
#[cfg(feature = "fixture-writer")]
pub mod fixture;
#[cfg(feature = "mmdb")]
pub mod live;
pub mod location;
#[cfg(feature = "mmdb")]
mod record;
#[cfg(feature = "files")]
pub mod regular;
#[cfg(feature = "mmdb")]
pub mod reload;
pub mod sample;
#[cfg(feature = "files")]
pub mod watch;

#[cfg(feature = "mmdb")]
pub use db::{is_private, DbInfo, GeoDb, Lookup};
#[cfg(feature = "mmdb")]
pub use error::GeoIpError;
#[cfg(feature = "mmdb")]
pub use live::{GeoIp, GeoStats, ReloadOutcome};
pub use location::{
    CodeError, ContinentCode, CountryCode, GeoPoint, Location, SubdivisionCode, EARTH_RADIUS_KM,
};
#[cfg(feature = "mmdb")]
pub use reload::{spawn_reloader, AttemptResult, ReloadAttempt, ReloadOptions, ReloaderHandle};
pub use sample::{sample_address, FixtureEntry, SAMPLE_DATABASE_TYPE, SAMPLE_ENTRIES};
#[cfg(feature = "files")]
pub use watch::{FileIdentity, FileWatch, WatchError, WatchWaker};

/// The committed sample database (`fixtures/geoedge-sample.mmdb`), built from
/// [`SAMPLE_ENTRIES`] with database type [`SAMPLE_DATABASE_TYPE`]. It holds no
/// MaxMind or DB-IP data; see `fixtures/README.md`. Load it with
/// [`GeoDb::sample`].
pub const SAMPLE_MMDB: &[u8] = include_bytes!("../fixtures/geoedge-sample.mmdb");
