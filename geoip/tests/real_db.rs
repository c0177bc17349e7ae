//! The real GeoLite2-City (2018) and DB-IP City Lite (2023) databases load,
//! and the sample addresses locate to the same countries in them. Skipped
//! (with a note) when the files are absent, except under CI.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{found, mapped, real_db};
use geoedge_geoip::{GeoDb, Lookup, SAMPLE_ENTRIES};
use maxminddb::geoip2;

fn check(name: &str, database_type: &str) {
    let Some(path) = real_db(name) else { return };
    let db = GeoDb::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let info = db.info();
    assert_eq!(info.database_type, database_type);
    assert_eq!(info.ip_version, 6);
    assert!(
        info.size_bytes > 10_000_000 && info.node_count > 1_000_000,
        "{info:?}"
    );

    // Every sample network (ten countries, IPv4 and IPv6) is in the same
    // country with coordinates, and the IPv4-mapped form agrees.
    let mut countries = std::collections::BTreeSet::new();
    for e in SAMPLE_ENTRIES {
        let a = e.address();
        let loc = found(db.lookup(a), format!("{name} {a}"));
        assert_eq!(
            loc.country.as_ref().map(|c| c.as_str()),
            Some(e.country),
            "{name} {a}"
        );
        assert_eq!(
            loc.continent.as_ref().map(|c| c.as_str()),
            Some(e.continent),
            "{name} {a}"
        );
        assert!(loc.point.is_some(), "{name} {a}: no coordinates");
        if let Some(m) = mapped(a) {
            assert_eq!(db.lookup(m), Lookup::Found(loc), "{name} {m}");
        }
        countries.insert(e.country);
    }
    assert!(countries.len() >= 5);
}

#[test]
fn geolite2_city_2018() {
    check("GeoLite2-City.mmdb", "GeoLite2-City");
}

#[test]
fn dbip_city_lite_2023() {
    check("dbip-city-lite-latest.mmdb", "DBIP-City-Lite");
}

/// Our partial decoder (and its caches) must agree with `maxminddb`'s full
/// `geoip2::City` decoding on whatever records random addresses hit. Half
/// the addresses share a /24 (or /48) with an earlier one, so answers cached
/// by block are checked against blocks split into smaller networks too.
fn agrees_with_full_decoding(name: &str) {
    let Some(path) = real_db(name) else { return };
    let db = GeoDb::open(&path).unwrap();
    let reader = maxminddb::Reader::open_readfile(&path).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut found_count = 0;
    let (mut v4, mut v6) = (0u32, 0u128);
    for i in 0..20_000 {
        let fresh_block = i % 8 < 4;
        let ip = if i % 4 == 0 {
            if fresh_block {
                let hi = 0x2000u128 | u128::from(next() & 0x0fff);
                v6 = (hi << 112) | (u128::from(next()) << 48);
            }
            // Same /48, another address in it.
            let low = (u128::from(next()) << 16) ^ u128::from(next() as u16);
            IpAddr::V6(Ipv6Addr::from(
                (v6 & !((1u128 << 80) - 1)) | (low & ((1u128 << 80) - 1)),
            ))
        } else {
            if fresh_block {
                v4 = next() as u32;
            }
            // Same /24, another address in it.
            IpAddr::V4(Ipv4Addr::from((v4 & 0xffff_ff00) | (next() as u32 & 0xff)))
        };
        let mine = db.lookup(ip);
        if mine == Lookup::Private {
            continue;
        }
        let full = reader.lookup(ip).unwrap().decode::<geoip2::City>().unwrap();
        let Some(c) = full else {
            assert_eq!(mine, Lookup::NotFound, "{name} {ip}");
            continue;
        };
        found_count += 1;
        let loc = found(mine, format!("{name} {ip}"));
        assert_eq!(
            loc.country.as_ref().map(|c| c.as_str()),
            c.country.iso_code.or(c.registered_country.iso_code),
            "{name} {ip}"
        );
        assert_eq!(
            loc.continent.as_ref().map(|c| c.as_str()),
            c.continent.code,
            "{name} {ip}"
        );
        assert_eq!(
            loc.subdivision.as_ref().map(|c| c.as_str()),
            c.subdivisions.first().and_then(|d| d.iso_code),
            "{name} {ip}"
        );
        assert_eq!(
            loc.point.map(|p| (p.latitude, p.longitude)),
            c.location.latitude.zip(c.location.longitude),
            "{name} {ip}"
        );
    }
    assert!(
        found_count > 5_000,
        "{name}: only {found_count} records hit"
    );
}

#[test]
fn geolite2_decoding_matches_maxminddb() {
    agrees_with_full_decoding("GeoLite2-City.mmdb");
}

#[test]
fn dbip_decoding_matches_maxminddb() {
    agrees_with_full_decoding("dbip-city-lite-latest.mmdb");
}
