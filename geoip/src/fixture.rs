//! Builds small GeoIP2-City-shaped `.mmdb` files with `mmdb-writer`, for
//! tests, the committed sample database and the demo (feature
//! `fixture-writer`).
//!
//! Output is deterministic: the same entries and database type always give
//! the same bytes (the build epoch is fixed unless given), which is what
//! keeps `fixtures/geoedge-sample.mmdb` in step with [`SAMPLE_ENTRIES`].

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use ipnet::IpNet;
use mmdb_writer::{Value, Writer};

pub use crate::sample::{
    sample_address, sample_entry, FixtureEntry, SAMPLE_DATABASE_TYPE, SAMPLE_ENTRIES,
};

/// The build epoch written by [`build`]: 2024-01-01T00:00:00Z.
pub const FIXTURE_BUILD_EPOCH: u64 = 1_704_067_200;

/// Builds a City-shaped database from `entries` with the given
/// `database_type` and build epoch [`FIXTURE_BUILD_EPOCH`]. Each network
/// gets the record
///
/// ```text
/// {"city": {"names": {"en": ..}},
///  "continent": {"code": ..},
///  "country": {"iso_code": ..},
///  "location": {"latitude": .., "longitude": ..},
///  "registered_country": {"iso_code": ..},
///  "subdivisions": [{"iso_code": ..}]}      (only with a subdivision)
/// ```
///
/// Later entries win where networks overlap.
///
/// # Panics
///
/// If an entry's network is not valid CIDR notation (a mistake in a static
/// table).
pub fn build(entries: &[FixtureEntry], database_type: &str) -> Vec<u8> {
    build_with_epoch(entries, database_type, FIXTURE_BUILD_EPOCH)
}

/// [`build`] with an explicit build epoch (seconds since the Unix epoch),
/// e.g. to tell two otherwise identical databases apart.
///
/// # Panics
///
/// As [`build`].
pub fn build_with_epoch(
    entries: &[FixtureEntry],
    database_type: &str,
    build_epoch: u64,
) -> Vec<u8> {
    let mut writer = Writer::builder(database_type)
        .description(&[("en", "geoedge test fixture (not MaxMind or DB-IP data)")])
        .languages(["en"])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(build_epoch))
        .build();
    for e in entries {
        let net: IpNet = e
            .network
            .parse()
            .unwrap_or_else(|err| panic!("fixture network {:?}: {err}", e.network));
        writer
            .insert_value(net, record(e))
            .unwrap_or_else(|err| panic!("fixture network {:?}: {err}", e.network));
    }
    writer
        .to_bytes()
        .unwrap_or_else(|err| panic!("fixture database too large: {err}"))
}

/// The sample database: [`SAMPLE_ENTRIES`] as [`SAMPLE_DATABASE_TYPE`],
/// byte-identical to [`crate::SAMPLE_MMDB`].
pub fn build_sample() -> Vec<u8> {
    build(SAMPLE_ENTRIES, SAMPLE_DATABASE_TYPE)
}

fn iso(code: &str) -> Value {
    Value::map([("iso_code", Value::from(code))])
}

fn record(e: &FixtureEntry) -> Value {
    let mut m = BTreeMap::new();
    m.insert(
        "city".to_owned(),
        Value::map([("names", Value::map([("en", Value::from(e.city))]))]),
    );
    m.insert(
        "continent".to_owned(),
        Value::map([("code", Value::from(e.continent))]),
    );
    m.insert("country".to_owned(), iso(e.country));
    m.insert(
        "location".to_owned(),
        Value::map([
            ("latitude", Value::Double(e.latitude)),
            ("longitude", Value::Double(e.longitude)),
        ]),
    );
    m.insert("registered_country".to_owned(), iso(e.country));
    if let Some(sub) = e.subdivision {
        m.insert("subdivisions".to_owned(), Value::Array(vec![iso(sub)]));
    }
    Value::Map(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GeoDb;

    #[test]
    fn build_is_deterministic_and_loads() {
        let a = build_sample();
        assert_eq!(a, build_sample());
        let db = GeoDb::from_bytes(a).unwrap();
        assert_eq!(db.info().database_type, SAMPLE_DATABASE_TYPE);
        assert_eq!(db.info().build_epoch, FIXTURE_BUILD_EPOCH);
        db.verify_full().unwrap();
    }
}
