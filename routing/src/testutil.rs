//! Builders for tables in unit tests.

use crate::raw::{BackendRow, CountryRegionRow, RawTable, RegionRow, Value};

/// Regions `eu` (Frankfurt), `us` (Ashburn), `sa` (São Paulo), `ap` (Singapore)
/// and a country map for GB/DE/FR → eu, US/CA → us, BR/AR → sa, JP/SG → ap.
pub fn table(backends: Vec<BackendRow>) -> RawTable {
    let regions = [
        ("eu", 50.1109, 8.6821),
        ("us", 39.0438, -77.4874),
        ("sa", -23.5505, -46.6333),
        ("ap", 1.3521, 103.8198),
    ];
    let countries = [
        ("GB", "eu"),
        ("DE", "eu"),
        ("FR", "eu"),
        ("US", "us"),
        ("CA", "us"),
        ("BR", "sa"),
        ("AR", "sa"),
        ("JP", "ap"),
        ("SG", "ap"),
    ];
    RawTable {
        schema_version: 1,
        backends,
        regions: Some(
            regions
                .iter()
                .enumerate()
                .map(|(i, &(id, lat, lon))| RegionRow {
                    rowid: i as i64 + 1,
                    id: id.into(),
                    name: Value::Null,
                    latitude: lat.into(),
                    longitude: lon.into(),
                })
                .collect(),
        ),
        country_regions: Some(
            countries
                .iter()
                .enumerate()
                .map(|(i, &(c, r))| CountryRegionRow {
                    rowid: i as i64 + 1,
                    country: c.into(),
                    region: r.into(),
                })
                .collect(),
        ),
        wg_peers: Vec::new(),
        apps: Vec::new(),
        sni_routes: Vec::new(),
    }
}

/// A backend row with a country and limits.
pub fn backend(id: &str, region: &str, country: Option<&str>, soft: i64, hard: i64) -> BackendRow {
    let mut r = BackendRow::new(id, region, "10.0.0.1", 8080, soft, hard);
    r.country = country.into();
    r
}
