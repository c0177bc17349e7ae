//! The fixture writer (feature `fixture-writer`): the committed sample
//! cannot drift from its entries table, and hand-built databases exercise
//! the decoder's edge cases.

use std::net::IpAddr;

use geoedge_geoip::fixture::{self, FixtureEntry, FIXTURE_BUILD_EPOCH};
use geoedge_geoip::{GeoDb, GeoIpError, Lookup, SAMPLE_DATABASE_TYPE, SAMPLE_ENTRIES, SAMPLE_MMDB};
use mmdb_writer::{IpVersion, Value, Writer};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn regenerated_sample_is_byte_identical_to_the_committed_file() {
    let built = fixture::build_sample();
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/geoedge-sample.mmdb"
    ))
    .unwrap();
    assert!(
        built == on_disk && built == SAMPLE_MMDB,
        "fixtures/geoedge-sample.mmdb is stale: regenerate it with \
         `cargo run -p geoedge-geoip --features fixture-writer --example make_fixture -- geoip/fixtures/geoedge-sample.mmdb`"
    );
    let db = GeoDb::from_bytes(built).unwrap();
    assert_eq!(db.info().database_type, SAMPLE_DATABASE_TYPE);
    assert_eq!(db.info().build_epoch, FIXTURE_BUILD_EPOCH);
}

#[test]
fn build_epoch_can_be_chosen() {
    let db = GeoDb::from_bytes(fixture::build_with_epoch(
        SAMPLE_ENTRIES,
        "Test-City",
        1_000,
    ))
    .unwrap();
    assert_eq!(db.info().build_epoch, 1_000);
}

#[test]
fn asn_database_is_rejected() {
    let mut w = Writer::new("GeoLite2-ASN");
    w.insert_value(
        "81.2.69.0/24".parse::<mmdb_writer::ipnet::IpNet>().unwrap(),
        Value::map([
            ("autonomous_system_number", Value::from(20_712_u32)),
            (
                "autonomous_system_organization",
                Value::from("Andrews & Arnold Ltd"),
            ),
        ]),
    )
    .unwrap();
    let err = GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap_err();
    assert!(
        matches!(&err, GeoIpError::UnsupportedType { database_type } if database_type == "GeoLite2-ASN"),
        "{err}"
    );
    assert!(err.to_string().contains("not a City or Country database"));
}

#[test]
fn country_databases_are_accepted() {
    for t in ["GeoLite2-Country", "GeoIP2-Country", "DBIP-Country-Lite"] {
        let db = GeoDb::from_bytes(fixture::build(SAMPLE_ENTRIES, t)).unwrap();
        assert_eq!(db.lookup(ip("81.2.69.7")).country().unwrap().as_str(), "GB");
    }
}

fn one_record(network: &str, record: Value) -> GeoDb {
    let mut w = Writer::new("Test-City");
    w.insert_value(
        network.parse::<mmdb_writer::ipnet::IpNet>().unwrap(),
        record,
    )
    .unwrap();
    GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap()
}

fn iso(code: &str) -> Value {
    Value::map([("iso_code", Value::from(code))])
}

#[test]
fn registered_country_is_the_fallback() {
    let db = one_record(
        "5.5.5.0/24",
        Value::map([
            ("registered_country", iso("NL")),
            ("continent", Value::map([("code", Value::from("EU"))])),
        ]),
    );
    let Lookup::Found(loc) = db.lookup(ip("5.5.5.5")) else {
        panic!()
    };
    assert_eq!(loc.country.unwrap().as_str(), "NL");
    assert!(loc.point.is_none() && loc.subdivision.is_none());

    let db = one_record(
        "5.5.5.0/24",
        Value::map([("country", iso("BE")), ("registered_country", iso("NL"))]),
    );
    assert_eq!(db.lookup(ip("5.5.5.5")).country().unwrap().as_str(), "BE");
}

#[test]
fn first_of_several_subdivisions_is_used() {
    let subs = Value::Array(vec![iso("ENG"), iso("BEN"), iso("XYZ")]);
    let db = one_record(
        "5.5.5.0/24",
        Value::map([
            ("country", iso("GB")),
            ("continent", Value::map([("code", Value::from("EU"))])),
            (
                "location",
                Value::map([
                    ("latitude", Value::Double(51.5)),
                    ("longitude", Value::Double(-0.1)),
                ]),
            ),
            ("subdivisions", subs),
            ("traits", Value::map([("is_anycast", Value::Bool(true))])),
        ]),
    );
    let Lookup::Found(loc) = db.lookup(ip("5.5.5.5")) else {
        panic!()
    };
    assert_eq!(loc.subdivision.unwrap().as_str(), "ENG");
    assert_eq!(
        loc.point.map(|p| (p.latitude, p.longitude)),
        Some((51.5, -0.1))
    );
}

#[test]
fn odd_values_degrade_to_missing_fields() {
    let db = one_record(
        "5.5.5.0/24",
        Value::map([
            ("country", iso("GBR")),                                  // not two letters
            ("continent", Value::map([("code", Value::from("E1"))])), // not letters
            ("subdivisions", Value::Array(vec![iso("TOOLONG")])),     // not 1-3 chars
            (
                "location",
                Value::map([
                    ("latitude", Value::Double(123.0)),
                    ("longitude", Value::Double(0.0)),
                ]),
            ),
        ]),
    );
    assert_eq!(db.lookup(ip("5.5.5.5")), Lookup::Found(Default::default()));
}

#[test]
fn wrongly_typed_fields_are_a_lookup_error_not_a_panic() {
    // Outside the probe addresses, so the database loads; the bad record
    // shows up as `Lookup::Error` when it is hit.
    let db = one_record("5.5.5.0/24", Value::map([("country", Value::from("GB"))]));
    assert_eq!(db.lookup(ip("5.5.5.5")), Lookup::Error);
    let db = one_record("5.5.5.0/24", Value::Array(vec![Value::from(1_u32)]));
    assert_eq!(db.lookup(ip("5.5.5.5")), Lookup::Error);
    let db = one_record(
        "5.5.5.0/24",
        Value::map([("location", Value::map([("latitude", Value::from("north"))]))]),
    );
    assert_eq!(db.lookup(ip("5.5.5.5")), Lookup::Error);
}

#[test]
fn a_bad_record_under_a_probe_address_fails_the_load() {
    let mut w = Writer::new("Test-City");
    w.insert_value(
        "8.8.8.0/24".parse::<mmdb_writer::ipnet::IpNet>().unwrap(),
        Value::map([("country", Value::from("US"))]),
    )
    .unwrap();
    let err = GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap_err();
    assert!(matches!(err, GeoIpError::Probe { .. }), "{err}");
}

#[test]
fn ipv4_only_databases_answer_ipv6_with_not_found() {
    let mut w = Writer::builder("Test-City")
        .ip_version(IpVersion::V4)
        .build();
    w.insert_value(
        "81.2.69.0/24".parse::<mmdb_writer::ipnet::IpNet>().unwrap(),
        Value::map([("country", iso("GB"))]),
    )
    .unwrap();
    let db = GeoDb::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(db.info().ip_version, 4);
    assert_eq!(db.lookup(ip("81.2.69.1")).country().unwrap().as_str(), "GB");
    assert_eq!(
        db.lookup(ip("::ffff:81.2.69.1"))
            .country()
            .unwrap()
            .as_str(),
        "GB"
    );
    assert_eq!(db.lookup(ip("2001:8b0::1")), Lookup::NotFound);
}

#[test]
fn entries_table_changes_change_the_answer() {
    let mut entries: Vec<FixtureEntry> = SAMPLE_ENTRIES.to_vec();
    entries[0].country = "IE";
    let db = GeoDb::from_bytes(fixture::build(&entries, SAMPLE_DATABASE_TYPE)).unwrap();
    assert_eq!(
        db.lookup(entries[0].address()).country().unwrap().as_str(),
        "IE"
    );
}
