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

#![warn(missing_docs)]

pub mod db;
pub mod error;
#[cfg(feature = "fixture-writer")]
pub mod fixture;
pub mod live;
pub mod location;
mod record;
pub mod regular;
pub mod reload;
pub mod sample;
pub mod watch;

pub use db::{is_private, DbInfo, GeoDb, Lookup};
pub use error::GeoIpError;
pub use live::{GeoIp, GeoStats, ReloadOutcome};
pub use location::{
    CodeError, ContinentCode, CountryCode, GeoPoint, Location, SubdivisionCode, EARTH_RADIUS_KM,
};
pub use reload::{spawn_reloader, AttemptResult, ReloadAttempt, ReloadOptions, ReloaderHandle};
pub use sample::{sample_address, FixtureEntry, SAMPLE_DATABASE_TYPE, SAMPLE_ENTRIES};
pub use watch::{FileIdentity, FileWatch, WatchError, WatchWaker};

/// The committed sample database (`fixtures/geoedge-sample.mmdb`), built from
/// [`SAMPLE_ENTRIES`] with database type [`SAMPLE_DATABASE_TYPE`]. It holds no
/// MaxMind or DB-IP data; see `fixtures/README.md`. Load it with
/// [`GeoDb::sample`].
pub const SAMPLE_MMDB: &[u8] = include_bytes!("../fixtures/geoedge-sample.mmdb");
