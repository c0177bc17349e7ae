//! Shared by the benchmarks: where the real databases are, and synthetic
//! routing tables of a given size.

#![allow(dead_code)]

use std::path::PathBuf;

use geoedge_geoip::GeoDb;
use geoedge_routing::raw::{BackendRow, CountryRegionRow, RawTable, RegionRow, Value};

/// `$GEOEDGE_GEODATA_DIR`, or `target/geodata` (where `.ci/run` puts the
/// databases the PyPI packages ship).
pub fn geodata_dir() -> PathBuf {
    std::env::var_os("GEOEDGE_GEODATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/geodata"))
}

/// The real GeoLite2-City database, or the embedded sample (with a note on
/// stderr) when it has not been fetched.
pub fn city_db() -> (GeoDb, &'static str) {
    let path = geodata_dir().join("GeoLite2-City.mmdb");
    match GeoDb::open(&path) {
        Ok(db) => (db, "GeoLite2-City"),
        Err(e) => {
            eprintln!(
                "note: {} unavailable ({e}); using the embedded sample (run .ci/run to fetch)",
                path.display()
            );
            (GeoDb::sample(), "sample")
        }
    }
}

/// Regions and countries spread over the globe.
const SITES: &[(&str, &str, f64, f64)] = &[
    ("eu", "GB", 51.5, -0.12),
    ("eu", "DE", 50.1, 8.68),
    ("eu", "FR", 48.85, 2.35),
    ("us", "US", 39.0, -77.5),
    ("us", "CA", 43.65, -79.38),
    ("sa", "BR", -23.55, -46.63),
    ("sa", "AR", -34.6, -58.4),
    ("ap", "SG", 1.35, 103.8),
    ("ap", "JP", 35.68, 139.69),
    ("ap", "AU", -33.87, 151.2),
];

/// A valid table with `n` backends spread over the sites, each with its own
/// coordinates near its site.
pub fn table(n: usize) -> RawTable {
    let regions = [
        ("eu", 50.1, 8.68),
        ("us", 39.0, -77.5),
        ("sa", -23.55, -46.63),
        ("ap", 1.35, 103.8),
    ];
    let backends = (0..n)
        .map(|i| {
            let (region, country, lat, lon) = SITES[i % SITES.len()];
            let jitter = (i / SITES.len()) as f64 * 0.01;
            let mut r = BackendRow::new(&format!("b{i:05}"), region, "10.0.0.1", 8080, 1000, 2000);
            r.rowid = i as i64;
            r.country = Value::Text(country.into());
            r.latitude = Value::Real(lat + jitter);
            r.longitude = Value::Real(lon - jitter);
            r
        })
        .collect();
    RawTable {
        schema_version: 1,
        backends,
        regions: Some(
            regions
                .iter()
                .enumerate()
                .map(|(i, &(id, lat, lon))| RegionRow {
                    rowid: i as i64,
                    id: id.into(),
                    name: Value::Null,
                    latitude: lat.into(),
                    longitude: lon.into(),
                })
                .collect(),
        ),
        country_regions: Some(
            SITES
                .iter()
                .enumerate()
                .map(|(i, &(region, country, _, _))| CountryRegionRow {
                    rowid: i as i64,
                    country: country.into(),
                    region: region.into(),
                })
                .collect(),
        ),
        wg_peers: Vec::new(),
        apps: Vec::new(),
        sni_routes: Vec::new(),
    }
}

/// A deterministic stream of public-looking IPv4 addresses (xorshift).
pub struct Addresses(u32);

impl Default for Addresses {
    fn default() -> Self {
        Self(0x9E37_79B9)
    }
}

impl Addresses {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Iterator for Addresses {
    type Item = std::net::IpAddr;
    fn next(&mut self) -> Option<Self::Item> {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        // Keep to 1.0.0.0–223.255.255.255 (unicast).
        let a = 1 + (x >> 24) % 223;
        Some(std::net::IpAddr::from(
            ((a << 24) | (x & 0x00FF_FFFF)).to_be_bytes(),
        ))
    }
}
