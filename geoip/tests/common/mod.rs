//! Helpers shared by the integration tests' modules.
#![allow(dead_code)] // without fixture-writer some go unused

use std::net::IpAddr;

use geoedge_geoip::{FixtureEntry, Location, Lookup};

pub use geoedge_testkit::real_db;

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
