//! Decoding the few fields of a City/Country record that geoedge needs,
//! with hand-written serde visitors that borrow strings from the in-memory
//! file and never allocate.
//!
//! Read: `country.iso_code`, `registered_country.iso_code` (only when the
//! record has no country code), `continent.code`, `location.latitude` /
//! `location.longitude`, and the first element's `iso_code` of
//! `subdivisions`. Everything else is skipped undecoded.
//!
//! Two shortcuts over a plain `#[derive(Deserialize)]` struct, worth about
//! a fifth of a lookup on GeoLite2-City: `registered_country` (with its
//! eight-language `names` map) is skipped when `country` already gave a
//! code, and once `subdivisions` has been read with everything else known,
//! decoding stops without walking the rest of the array and record. Stopping
//! early is safe only at that point: nothing is read after it, so the
//! decoder's position no longer matters.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The fields of one record that geoedge uses, borrowed from the database.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Record<'a> {
    /// `country.iso_code`.
    pub(crate) country: Option<&'a str>,
    /// `registered_country.iso_code`, read only when `country` had none.
    pub(crate) registered_country: Option<&'a str>,
    /// `continent.code`.
    pub(crate) continent: Option<&'a str>,
    /// `location.latitude`.
    pub(crate) latitude: Option<f64>,
    /// `location.longitude`.
    pub(crate) longitude: Option<f64>,
    /// `subdivisions[0].iso_code`.
    pub(crate) subdivision: Option<&'a str>,
}

/// The map keys this module cares about; everything else is `Other`.
enum Key {
    Country,
    RegisteredCountry,
    Continent,
    Location,
    Subdivisions,
    IsoCode,
    Code,
    Latitude,
    Longitude,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Key, E> {
                Ok(match v {
                    b"country" => Key::Country,
                    b"registered_country" => Key::RegisteredCountry,
                    b"continent" => Key::Continent,
                    b"location" => Key::Location,
                    b"subdivisions" => Key::Subdivisions,
                    b"iso_code" => Key::IsoCode,
                    b"code" => Key::Code,
                    b"latitude" => Key::Latitude,
                    b"longitude" => Key::Longitude,
                    _ => Key::Other,
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
                self.visit_bytes(v.as_bytes())
            }
        }
        d.deserialize_identifier(V)
    }
}

/// The `iso_code` and `code` entries of a country, continent or
/// subdivision map.
#[derive(Default)]
struct Codes<'a> {
    iso_code: Option<&'a str>,
    code: Option<&'a str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Codes<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Codes<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Codes<'a>, A::Error> {
                let mut c = Codes::default();
                while let Some(k) = m.next_key::<Key>()? {
                    match k {
                        Key::IsoCode => c.iso_code = Some(m.next_value::<&'de str>()?),
                        Key::Code => c.code = Some(m.next_value::<&'de str>()?),
                        _ => m.next_value::<IgnoredAny>().map(drop)?,
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `latitude` and `longitude` of a `location` map.
#[derive(Default)]
struct Coordinates {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl<'de> Deserialize<'de> for Coordinates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Coordinates;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a location map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Coordinates, A::Error> {
                let mut c = Coordinates::default();
                while let Some(k) = m.next_key::<Key>()? {
                    match k {
                        Key::Latitude => c.latitude = Some(m.next_value()?),
                        Key::Longitude => c.longitude = Some(m.next_value()?),
                        _ => m.next_value::<IgnoredAny>().map(drop)?,
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads the first subdivision's `iso_code`. With `stop_after_first` the
/// rest of the array is left unread (only valid when nothing is decoded
/// afterwards); otherwise it is skipped so the decoder stays in step.
struct FirstSubdivision {
    stop_after_first: bool,
}

impl<'de> DeserializeSeed<'de> for FirstSubdivision {
    type Value = Option<&'de str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V(bool);
        impl<'de> Visitor<'de> for V {
            type Value = Option<&'de str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of subdivisions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let first = s.next_element::<Codes<'de>>()?.and_then(|c| c.iso_code);
                if !self.0 {
                    while s.next_element::<IgnoredAny>()?.is_some() {}
                }
                Ok(first)
            }
        }
        d.deserialize_seq(V(self.stop_after_first))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Record<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Record<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a City or Country record (a map)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Record<'a>, A::Error> {
                let mut r = Record::default();
                let (mut saw_continent, mut saw_location) = (false, false);
                while let Some(k) = m.next_key::<Key>()? {
                    match k {
                        Key::Country => r.country = m.next_value::<Codes<'de>>()?.iso_code,
                        Key::RegisteredCountry if r.country.is_none() => {
                            r.registered_country = m.next_value::<Codes<'de>>()?.iso_code;
                        }
                        Key::Continent => {
                            saw_continent = true;
                            r.continent = m.next_value::<Codes<'de>>()?.code;
                        }
                        Key::Location => {
                            saw_location = true;
                            let c = m.next_value::<Coordinates>()?;
                            (r.latitude, r.longitude) = (c.latitude, c.longitude);
                        }
                        Key::Subdivisions => {
                            let done = r.country.is_some() && saw_continent && saw_location;
                            r.subdivision = m.next_value_seed(FirstSubdivision {
                                stop_after_first: done,
                            })?;
                            if done {
                                return Ok(r);
                            }
                        }
                        _ => m.next_value::<IgnoredAny>().map(drop)?,
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}
