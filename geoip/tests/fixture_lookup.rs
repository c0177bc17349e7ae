//! The committed sample database answers exactly what its entries table says.

use crate::common;

use std::net::IpAddr;

use common::{addresses_in, found, mapped};
use geoedge_geoip::{
    sample_address, GeoDb, GeoIp, Lookup, SAMPLE_DATABASE_TYPE, SAMPLE_ENTRIES, SAMPLE_MMDB,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_sample_network_locates_as_listed() {
    let db = GeoDb::sample();
    for e in SAMPLE_ENTRIES {
        let want = e.location();
        assert!(want.country.is_some() && want.point.is_some());
        for a in addresses_in(e) {
            let got = found(db.lookup(a), a);
            assert_eq!(got, want, "{a} in {}", e.network);
            if let Some(m) = mapped(a) {
                assert_eq!(db.lookup(m), Lookup::Found(want), "{m}");
            }
        }
    }
}

#[test]
fn sample_addresses_cover_the_advertised_countries() {
    let db = GeoDb::sample();
    for cc in ["GB", "DE", "FR", "US", "BR", "JP", "AU", "ZA", "IN", "SG"] {
        let a = sample_address(cc);
        assert!(a.is_ipv4());
        assert_eq!(db.lookup(a).country().unwrap().as_str(), cc, "{a}");
    }
    let ny = found(db.lookup(sample_address("US")), "US");
    assert_eq!(ny.subdivision.unwrap().as_str(), "NY");
    let sf = found(db.lookup(ip("151.101.0.1")), "SF");
    assert_eq!(sf.subdivision.unwrap().as_str(), "CA");
    assert_eq!(
        found(db.lookup(ip("2001:8b0::42")), "GB v6")
            .country
            .unwrap()
            .as_str(),
        "GB"
    );
}

#[test]
fn private_addresses_are_not_looked_up() {
    let db = GeoDb::sample();
    for p in [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.0.10",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.1.1",
        "0.0.0.0",
        "::",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:192.168.1.1",
    ] {
        assert_eq!(db.lookup(ip(p)), Lookup::Private, "{p}");
    }
}

#[test]
fn addresses_outside_all_networks_are_not_found() {
    let db = GeoDb::sample();
    for a in [
        "9.9.9.9",
        "81.2.70.1",
        "81.2.68.255",
        "8.8.8.8",
        "192.0.2.1",   // documentation: a normal lookup, just absent
        "2001:db8::1", // documentation
        "2001:8b0:1::1",
        "2a00:1450:4002::1",
        "::ffff:9.9.9.9",
    ] {
        assert_eq!(db.lookup(ip(a)), Lookup::NotFound, "{a}");
    }
}

#[test]
fn sample_metadata_and_full_verification() {
    let db = GeoDb::sample();
    let info = db.info();
    assert_eq!(info.database_type, SAMPLE_DATABASE_TYPE);
    assert_eq!(info.ip_version, 6);
    assert_eq!(info.size_bytes, SAMPLE_MMDB.len());
    assert!(info.node_count > 0);
    db.verify_full().unwrap();
}

#[test]
fn live_holder_counts_each_result() {
    let g = GeoIp::with_db(GeoDb::sample());
    g.lookup(sample_address("JP"));
    g.lookup(sample_address("ZA"));
    g.lookup(ip("9.9.9.9"));
    g.lookup(ip("10.1.1.1"));
    let s = g.stats();
    assert_eq!(
        (s.found, s.not_found, s.private, s.error, s.no_database),
        (2, 1, 1, 0, 0)
    );
    assert_eq!(s.lookups(), 4);
    assert_eq!(s.generation, 1);
    assert_eq!(s.build_epoch, g.current().unwrap().info().build_epoch);
}
