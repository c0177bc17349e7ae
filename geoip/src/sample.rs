//! The standard sample networks: the table behind the committed sample
//! database ([`crate::SAMPLE_MMDB`]), usable by tests in any crate to pick
//! addresses with a known location.
//!
//! Every network was chosen so that its addresses *also* locate to the same
//! country in the real GeoLite2-City (2018) and DB-IP City Lite (2023)
//! databases, so the same test addresses work against the sample and against
//! real data. The coordinates are approximate centres of the named cities,
//! chosen by us; no MaxMind or DB-IP data is contained here.

use std::net::IpAddr;

use crate::location::{ContinentCode, CountryCode, GeoPoint, Location, SubdivisionCode};

/// `database_type` of the committed sample database.
pub const SAMPLE_DATABASE_TYPE: &str = "GeoEdge-Sample-City";

/// One network of a fixture database and the location it maps to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixtureEntry {
    /// The network in CIDR notation (`81.2.69.0/24`, `2001:8b0::/48`).
    pub network: &'static str,
    /// ISO 3166-1 alpha-2 country code (`GB`).
    pub country: &'static str,
    /// Two-letter continent code (`EU`).
    pub continent: &'static str,
    /// ISO 3166-2 subdivision code without the country prefix (`ENG`).
    pub subdivision: Option<&'static str>,
    /// English city name (stored as `city.names.en`).
    pub city: &'static str,
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
}

impl FixtureEntry {
    /// A representative address inside the network: the network address
    /// plus one (`81.2.69.1`, `2001:8b0::1`).
    ///
    /// # Panics
    ///
    /// If `network` is not `address/prefix` notation — a mistake in a
    /// static table, not a runtime input.
    pub fn address(&self) -> IpAddr {
        let addr: IpAddr = self
            .network
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("fixture network {:?} is not CIDR notation", self.network));
        match addr {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) | 1).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) | 1).into()),
        }
    }

    /// The [`Location`] a lookup of an address in this network should give.
    /// Fields that do not parse are `None`.
    pub fn location(&self) -> Location {
        Location {
            country: CountryCode::parse(self.country).ok(),
            continent: ContinentCode::parse(self.continent).ok(),
            subdivision: self.subdivision.and_then(SubdivisionCode::parse),
            point: GeoPoint::new(self.latitude, self.longitude),
        }
    }
}

/// The standard sample: eleven IPv4 /24s in ten countries on six continents
/// (two in the US: New York and San Francisco), plus IPv6 /48s for GB, DE
/// and JP. IPv4 entries come first, so [`sample_address`] picks IPv4.
///
/// | country | network | city | real-data check |
/// |---|---|---|---|
/// | GB | 81.2.69.0/24, 2001:8b0::/48 | London | GB in GeoLite2 2018 and DB-IP 2023 |
/// | DE | 80.81.192.0/24, 2a00:1450:4001::/48 | Frankfurt | DE in both |
/// | FR | 212.27.48.0/24 | Paris | FR in both |
/// | US | 207.237.0.0/24 (NY), 151.101.0.0/24 (CA) | New York, San Francisco | US in both |
/// | BR | 200.160.0.0/24 | São Paulo | BR in both |
/// | JP | 202.248.0.0/24, 2001:240::/48 | Tokyo | JP in both |
/// | AU | 203.2.218.0/24 | Sydney | AU in both |
/// | ZA | 196.25.1.0/24 | Johannesburg | ZA in both |
/// | IN | 59.160.0.0/24 | Mumbai | IN in both |
/// | SG | 203.116.0.0/24 | Singapore | SG in both |
pub const SAMPLE_ENTRIES: &[FixtureEntry] = &[
    entry(
        "81.2.69.0/24",
        "GB",
        "EU",
        Some("ENG"),
        "London",
        51.5074,
        -0.1278,
    ),
    entry(
        "80.81.192.0/24",
        "DE",
        "EU",
        Some("HE"),
        "Frankfurt am Main",
        50.1109,
        8.6821,
    ),
    entry(
        "212.27.48.0/24",
        "FR",
        "EU",
        Some("IDF"),
        "Paris",
        48.8566,
        2.3522,
    ),
    entry(
        "207.237.0.0/24",
        "US",
        "NA",
        Some("NY"),
        "New York",
        40.7128,
        -74.0060,
    ),
    entry(
        "151.101.0.0/24",
        "US",
        "NA",
        Some("CA"),
        "San Francisco",
        37.7749,
        -122.4194,
    ),
    entry(
        "200.160.0.0/24",
        "BR",
        "SA",
        Some("SP"),
        "São Paulo",
        -23.5505,
        -46.6333,
    ),
    entry(
        "202.248.0.0/24",
        "JP",
        "AS",
        Some("13"),
        "Tokyo",
        35.6762,
        139.6503,
    ),
    entry(
        "203.2.218.0/24",
        "AU",
        "OC",
        Some("NSW"),
        "Sydney",
        -33.8688,
        151.2093,
    ),
    entry(
        "196.25.1.0/24",
        "ZA",
        "AF",
        Some("GT"),
        "Johannesburg",
        -26.2041,
        28.0473,
    ),
    entry(
        "59.160.0.0/24",
        "IN",
        "AS",
        Some("MH"),
        "Mumbai",
        19.0760,
        72.8777,
    ),
    entry(
        "203.116.0.0/24",
        "SG",
        "AS",
        Some("01"),
        "Singapore",
        1.3521,
        103.8198,
    ),
    entry(
        "2001:8b0::/48",
        "GB",
        "EU",
        Some("ENG"),
        "London",
        51.5074,
        -0.1278,
    ),
    entry(
        "2a00:1450:4001::/48",
        "DE",
        "EU",
        Some("HE"),
        "Frankfurt am Main",
        50.1109,
        8.6821,
    ),
    entry(
        "2001:240::/48",
        "JP",
        "AS",
        Some("13"),
        "Tokyo",
        35.6762,
        139.6503,
    ),
];

const fn entry(
    network: &'static str,
    country: &'static str,
    continent: &'static str,
    subdivision: Option<&'static str>,
    city: &'static str,
    latitude: f64,
    longitude: f64,
) -> FixtureEntry {
    FixtureEntry {
        network,
        country,
        continent,
        subdivision,
        city,
        latitude,
        longitude,
    }
}

/// The first [`SAMPLE_ENTRIES`] entry for `country` (case-insensitive).
pub fn sample_entry(country: &str) -> Option<&'static FixtureEntry> {
    SAMPLE_ENTRIES
        .iter()
        .find(|e| e.country.eq_ignore_ascii_case(country))
}

/// An IPv4 address that locates to `country` in the sample database (and
/// in the real GeoLite2/DB-IP files): the first sample network's
/// [`FixtureEntry::address`]. For the US this is the New York network.
///
/// # Panics
///
/// If the sample has no network in `country`; it covers GB, DE, FR, US,
/// BR, JP, AU, ZA, IN and SG.
pub fn sample_address(country: &str) -> IpAddr {
    sample_entry(country)
        .unwrap_or_else(|| panic!("no sample network for country {country:?}"))
        .address()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        let mut continents = std::collections::BTreeSet::new();
        let mut countries = std::collections::BTreeSet::new();
        for e in SAMPLE_ENTRIES {
            let loc = e.location();
            assert!(
                loc.country.is_some() && loc.continent.is_some() && loc.point.is_some(),
                "{e:?}"
            );
            assert_eq!(loc.subdivision.is_some(), e.subdivision.is_some(), "{e:?}");
            let _ = e.address();
            continents.insert(e.continent);
            countries.insert(e.country);
        }
        assert!(countries.len() >= 8 && continents.len() >= 5);
        assert_eq!(sample_address("gb").to_string(), "81.2.69.1");
        assert_eq!(sample_address("US").to_string(), "207.237.0.1");
        assert_eq!(SAMPLE_ENTRIES[11].address().to_string(), "2001:8b0::1");
        assert!(sample_entry("XX").is_none());
    }
}
