//! Fuzzes the MaxMind DB loader on mutated database files: a reload of a
//! corrupt, truncated or hostile `.mmdb` must end in an error (and the old
//! database kept), never a panic, a hang or a runaway allocation; a file
//! that loads must answer every lookup without panicking.
//!
//! The seed corpus is the committed sample database
//! (`geoip/fixtures/geoedge-sample.mmdb`) and cuts of it, so mutations start
//! from a well-formed search tree, data section and metadata.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use geoedge_geoip::{GeoDb, GeoIpError, Lookup, SAMPLE_ENTRIES};
use libfuzzer_sys::fuzz_target;

/// Addresses looked up besides the sample's networks: the ends of both
/// address spaces, an IPv4-mapped address and addresses the loader probes.
const EXTRA: [IpAddr; 8] = [
    IpAddr::V4(Ipv4Addr::new(0, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(81, 2, 69, 160)),
    IpAddr::V4(Ipv4Addr::new(255, 255, 255, 255)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x5102, 0x4501)),
    IpAddr::V6(Ipv6Addr::new(
        0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
    )),
];

fuzz_target!(|data: &[u8]| {
    let db = match GeoDb::from_bytes(data.to_vec()) {
        Ok(db) => db,
        Err(e) => {
            if data.is_empty() {
                assert!(matches!(e, GeoIpError::Empty));
            }
            let _ = e.to_string();
            return;
        }
    };
    let info = db.info();
    assert_eq!(info.size_bytes, data.len());
    let addresses = SAMPLE_ENTRIES
        .iter()
        .map(|e| e.address())
        .chain(EXTRA)
        .chain(derived(data));
    for ip in addresses {
        // Twice: the second answer may come from the caches and must agree.
        let first = db.lookup(ip);
        let second = db.lookup(ip);
        match (first, second) {
            (Lookup::Found(a), Lookup::Found(b)) => assert_eq!(a, b, "{ip}"),
            (a, b) => assert_eq!(a.label(), b.label(), "{ip}"),
        }
    }
    // The full walk `geoedge` offers offline must end too, in Ok or Err.
    let _ = db.verify_full();
});

/// A few addresses taken from the file itself (its last bytes), so that the
/// fuzzer can steer lookups into mutated parts of the tree.
fn derived(data: &[u8]) -> impl Iterator<Item = IpAddr> + '_ {
    data.rchunks_exact(16).take(4).flat_map(|c| {
        let mut o = [0u8; 16];
        o.copy_from_slice(c);
        [
            IpAddr::V6(Ipv6Addr::from(o)),
            IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
        ]
    })
}
