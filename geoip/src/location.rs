//! The geographic vocabulary shared by the GeoIP reader and the routing core:
//! ISO country and continent codes, coordinates, and what a lookup found.
//!
//! Everything here is `Copy` and allocation-free so that a decision on the
//! per-connection path never touches the heap for geography.

use std::fmt;
use std::str::FromStr;

/// Why a code or coordinate could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// Not exactly two ASCII letters.
    #[error("{0:?} is not a two-letter code")]
    Malformed(String),
}

/// An ISO 3166-1 alpha-2 country code, stored upper-case (`GB`, `US`, `BR`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

/// A two-letter continent code as MaxMind and DB-IP use it (`EU`, `NA`, `SA`, `AS`, `AF`, `OC`, `AN`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContinentCode([u8; 2]);

macro_rules! two_letter_code {
    ($ty:ident) => {
        impl $ty {
            /// Parses two ASCII letters in either case.
            pub fn parse(s: &str) -> Result<Self, CodeError> {
                let b = s.as_bytes();
                if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
                    Ok(Self([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
                } else {
                    Err(CodeError::Malformed(s.to_owned()))
                }
            }

            /// The code as an upper-case `&str`.
            pub fn as_str(&self) -> &str {
                // Only ASCII letters are ever stored.
                std::str::from_utf8(&self.0).unwrap_or("??")
            }
        }

        impl FromStr for $ty {
            type Err = CodeError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.as_str())
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

two_letter_code!(CountryCode);
two_letter_code!(ContinentCode);

/// A point on the globe in degrees (WGS 84), latitude in [-90, 90] and
/// longitude in [-180, 180].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GeoPoint {
    /// Degrees north of the equator.
    pub latitude: f64,
    /// Degrees east of Greenwich.
    pub longitude: f64,
}

/// Mean Earth radius used for great-circle distances, in kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

impl GeoPoint {
    /// A point, or `None` when either coordinate is out of range or not finite.
    pub fn new(latitude: f64, longitude: f64) -> Option<Self> {
        let ok = latitude.is_finite()
            && longitude.is_finite()
            && (-90.0..=90.0).contains(&latitude)
            && (-180.0..=180.0).contains(&longitude);
        ok.then_some(Self {
            latitude,
            longitude,
        })
    }

    /// The point as a unit vector (x, y, z) on the sphere. Dot products of
    /// unit vectors order points by great-circle distance without any
    /// trigonometry on the hot path.
    pub fn unit_vector(&self) -> [f64; 3] {
        let (lat, lon) = (self.latitude.to_radians(), self.longitude.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

/// An ISO 3166-2 subdivision code without its country prefix (`ENG`, `CA`,
/// `SP`): one to three ASCII alphanumerics.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubdivisionCode {
    bytes: [u8; 3],
    len: u8,
}

impl SubdivisionCode {
    /// Parses one to three ASCII alphanumerics.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut bytes = [0u8; 3];
        bytes[..b.len()].copy_from_slice(b);
        Some(Self {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The code as a `&str`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Debug for SubdivisionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubdivisionCode({})", self.as_str())
    }
}

impl fmt::Display for SubdivisionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for SubdivisionCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What a GeoIP lookup found about one address. Every field is optional:
/// Country databases carry no coordinates, DB-IP carries no subdivision
/// codes, and anycast networks carry no country.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Location {
    /// Country of the address (`country`, falling back to `registered_country`).
    pub country: Option<CountryCode>,
    /// Continent of the address.
    pub continent: Option<ContinentCode>,
    /// First-level subdivision (state, province, nation), when known.
    pub subdivision: Option<SubdivisionCode>,
    /// Coordinates of the address, when known.
    pub point: Option<GeoPoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_parse_upper_and_reject_junk() {
        assert_eq!(CountryCode::parse("gb").unwrap().as_str(), "GB");
        assert!(CountryCode::parse("GBR").is_err());
        assert!(CountryCode::parse("1A").is_err());
        assert!(CountryCode::parse("").is_err());
        assert_eq!(ContinentCode::parse("EU").unwrap().to_string(), "EU");
        assert_eq!(SubdivisionCode::parse("ENG").unwrap().as_str(), "ENG");
        assert!(SubdivisionCode::parse("ENGL").is_none());
    }

    #[test]
    fn points_validate_ranges() {
        assert!(GeoPoint::new(91.0, 0.0).is_none());
        assert!(GeoPoint::new(0.0, -180.5).is_none());
        assert!(GeoPoint::new(f64::NAN, 0.0).is_none());
        assert!(GeoPoint::new(-33.9, 151.2).is_some());
    }

    #[test]
    fn london_to_new_york_is_about_5570_km() {
        let lon = GeoPoint::new(51.5074, -0.1278).unwrap();
        let nyc = GeoPoint::new(40.7128, -74.0060).unwrap();
        let d = lon.distance_km(&nyc);
        assert!((d - 5570.0).abs() < 10.0, "{d}");
        assert!(lon.distance_km(&lon) < 1e-9);
    }

    #[test]
    fn dot_product_orders_like_distance() {
        let c = GeoPoint::new(-23.5, -46.6).unwrap(); // São Paulo
        let near = GeoPoint::new(25.8, -80.2).unwrap(); // Miami
        let far = GeoPoint::new(50.1, 8.7).unwrap(); // Frankfurt
        let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        assert_eq!(
            c.distance_km(&near) < c.distance_km(&far),
            dot(c.unit_vector(), near.unit_vector()) > dot(c.unit_vector(), far.unit_vector())
        );
    }
}
