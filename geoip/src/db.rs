//! One GeoIP database held fully in memory ([`GeoDb`]) and the outcome of
//! looking an address up in it ([`Lookup`]).
//!
//! Loading checks the file cheaply (structure, metadata, a handful of probe
//! lookups) so that even the 56 MB GeoLite2-City loads in milliseconds; the
//! exhaustive walk of the whole file is available as [`GeoDb::verify_full`]
//! for offline checks. Lookups decode only the five fields geoedge needs
//! (see the private `record` module), borrowing strings from the in-memory
//! file, so they never allocate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use maxminddb::{MaxMindDbError, Reader};
use parking_lot::Mutex;

use crate::error::GeoIpError;
use crate::location::{ContinentCode, CountryCode, GeoPoint, Location, SubdivisionCode};
use crate::record::Record;

/// Addresses looked up (and required to decode) when a database is loaded.
/// Not finding them is fine; failing to decode their records is not.
const PROBES: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V4(Ipv4Addr::new(81, 2, 69, 160)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888)),
];

/// Facts about a loaded database, from its metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DbInfo {
    /// The metadata `database_type`, e.g. `GeoLite2-City` or `DBIP-City-Lite`.
    pub database_type: String,
    /// When the database was built, in seconds since the Unix epoch.
    pub build_epoch: u64,
    /// 4 for an IPv4-only database, 6 for one that also covers IPv6.
    pub ip_version: u16,
    /// Number of nodes in the search tree.
    pub node_count: u32,
    /// Size of the whole file in bytes (all of it is held in memory).
    pub size_bytes: usize,
}

/// What a lookup found. `Copy` and allocation-free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup {
    /// The database has a record for the address. Individual fields of the
    /// [`Location`] may still be missing (anycast networks, DB-IP without
    /// subdivisions, Country databases without coordinates).
    Found(Location),
    /// The database has no record covering the address.
    NotFound,
    /// The address is not globally routable (see [`is_private`]); the
    /// database was not consulted.
    Private,
    /// The record for the address could not be decoded (corrupt data).
    Error,
    /// No database is loaded (only from [`GeoIp`](crate::GeoIp)).
    NoDatabase,
}

impl Lookup {
    /// The location, when one was found.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Lookup::Found(loc) => Some(loc),
            _ => None,
        }
    }

    /// The country, when a record with a country was found.
    pub fn country(&self) -> Option<CountryCode> {
        self.location().and_then(|l| l.country)
    }

    /// A stable lower-case label for metrics and logs: `found`,
    /// `not_found`, `private`, `error` or `no_database`.
    pub fn label(&self) -> &'static str {
        match self {
            Lookup::Found(_) => "found",
            Lookup::NotFound => "not_found",
            Lookup::Private => "private",
            Lookup::Error => "error",
            Lookup::NoDatabase => "no_database",
        }
    }
}

/// Whether `ip` is not globally routable, so looking it up is pointless:
/// IPv4 "this network" 0.0.0.0/8 (including the unspecified address),
/// RFC 1918 private ranges, loopback 127.0.0.0/8, link-local 169.254.0.0/16
/// and shared/CGNAT 100.64.0.0/10; IPv6 unspecified `::`, loopback `::1`,
/// unique-local fc00::/7 and link-local fe80::/10. IPv4-mapped IPv6
/// addresses (`::ffff:a.b.c.d`) are judged as their IPv4 address.
///
/// Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
/// 2001:db8::/32), multicast and broadcast are deliberately *not* private:
/// they are looked up like any other address (and normally not found).
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 0
                || v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_unspecified()
                || v6.is_loopback()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The address to look up: IPv4-mapped IPv6 becomes plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// One GeoIP database (City or Country shaped) read fully into memory.
///
/// Cheap to share behind an `Arc`; lookups take `&self` and never allocate.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    info: DbInfo,
    /// Answers by /24 (IPv4) or /48 (IPv6) block, for blocks inside one network.
    blocks: Cache,
    /// Decoded records by data-section offset.
    records: Cache,
}

/// A small direct-mapped cache of lookup answers, used twice:
///
/// * by address block: when the network an address falls in is a /24 or
///   shorter (IPv4; /48 for IPv6), every address of its /24 (/48) gets the
///   same answer, so the answer is cached under the block and the next
///   client from that block skips the search tree entirely (exact, never a
///   guess: blocks inside a longer network are not cached);
/// * by record offset: many networks share one record (a city), and
///   decoding a record costs more than walking the tree to it.
///
/// Bounded (a fixed number of slots); a slot another thread holds is treated
/// as a miss, so a lookup never waits.
struct Cache {
    slots: Box<[Mutex<Slot>]>,
}

#[derive(Clone, Copy)]
struct Slot {
    /// The key; `u64::MAX` when empty.
    key: u64,
    /// The answer: a location, or `None` for "not in the database".
    answer: Option<Location>,
}

/// Slots per cache: 65,536 of 48 bytes, about 3 MiB each.
const CACHE_SLOTS: usize = 1 << 16;

impl Cache {
    fn new() -> Self {
        let empty = Slot {
            key: u64::MAX,
            answer: None,
        };
        Self {
            slots: (0..CACHE_SLOTS).map(|_| Mutex::new(empty)).collect(),
        }
    }

    fn slot(&self, key: u64) -> &Mutex<Slot> {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_SLOTS.trailing_zeros());
        &self.slots[h as usize]
    }

    fn get(&self, key: u64) -> Option<Option<Location>> {
        let slot = self.slot(key).try_lock()?;
        (slot.key == key).then_some(slot.answer)
    }

    fn put(&self, key: u64, answer: Option<Location>) {
        if let Some(mut slot) = self.slot(key).try_lock() {
            *slot = Slot { key, answer };
        }
    }
}

/// The cache key of an address's /24 (IPv4) or /48 (IPv6) block.
fn block_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => (4 << 56) | u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (6 << 56) | (u128::from(v6) >> 80) as u64,
    }
}

/// Whether a network of `prefix` bits covers the whole block of `ip`.
fn covers_block(ip: IpAddr, network_is_v4: bool, prefix: u8) -> bool {
    match ip {
        IpAddr::V4(_) => network_is_v4 && prefix <= 24,
        IpAddr::V6(_) => !network_is_v4 && prefix <= 48,
    }
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl GeoDb {
    /// Reads the whole file at `path` into memory and checks it as
    /// [`GeoDb::from_bytes`] does. Anything but a regular file (a FIFO, a
    /// device, a directory) is refused at once as [`GeoIpError::Io`].
    pub fn open(path: impl AsRef<Path>) -> Result<GeoDb, GeoIpError> {
        let path = path.as_ref();
        let io_err = |error| GeoIpError::Io {
            path: path.to_owned(),
            error,
        };
        // Never blocks on a FIFO or reads a device put in the file's place.
        let buf = crate::regular::read_regular(path).map_err(io_err)?;
        Self::from_bytes(buf)
    }

    /// Takes ownership of a whole database file and checks it: the
    /// MaxMind DB structure (metadata, search-tree bounds), the metadata
    /// (`database_type` must name a City, Country or Enterprise database),
    /// and probe lookups of a few well-known addresses, whose records must
    /// decode. This is deliberately much cheaper than
    /// [`GeoDb::verify_full`]; corruption elsewhere in the data section shows
    /// up later as [`Lookup::Error`] for the affected networks.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, GeoIpError> {
        if bytes.is_empty() {
            return Err(GeoIpError::Empty);
        }
        let size_bytes = bytes.len();
        let reader = Reader::from_source(bytes).map_err(GeoIpError::Malformed)?;
        let meta = reader.metadata();
        if !is_supported_type(&meta.database_type) {
            return Err(GeoIpError::UnsupportedType {
                database_type: meta.database_type.clone(),
            });
        }
        let info = DbInfo {
            database_type: meta.database_type.clone(),
            build_epoch: meta.build_epoch,
            ip_version: meta.ip_version,
            node_count: meta.node_count,
            size_bytes,
        };
        let db = GeoDb {
            reader,
            info,
            blocks: Cache::new(),
            records: Cache::new(),
        };
        for address in PROBES {
            db.decode(address)
                .map_err(|error| GeoIpError::Probe { address, error })?;
        }
        Ok(db)
    }

    /// The committed sample database ([`crate::SAMPLE_MMDB`]).
    ///
    /// # Panics
    ///
    /// Only if the crate was built with a corrupt sample file, which the
    /// crate's own tests rule out.
    pub fn sample() -> GeoDb {
        Self::from_bytes(crate::SAMPLE_MMDB.to_vec())
            .expect("the committed sample database is valid")
    }

    /// Walks the entire database (every network and every record it points
    /// to). Slow (seconds for a full City database) and meant for offline
    /// checks, not for the reload path.
    pub fn verify_full(&self) -> Result<(), GeoIpError> {
        self.reader.verify().map_err(GeoIpError::Verify)
    }

    /// Facts from the database's metadata.
    pub fn info(&self) -> &DbInfo {
        &self.info
    }

    /// Looks `ip` up. Non-routable addresses answer [`Lookup::Private`]
    /// without touching the database; IPv4-mapped IPv6 addresses are looked
    /// up as IPv4. Never allocates and never panics.
    pub fn lookup(&self, ip: IpAddr) -> Lookup {
        if is_private(ip) {
            return Lookup::Private;
        }
        match self.decode(canonical(ip)) {
            Ok(Some(loc)) => Lookup::Found(loc),
            Ok(None) => Lookup::NotFound,
            Err(_) => Lookup::Error,
        }
    }

    /// Decodes the record for `ip` (already canonical) into a [`Location`].
    fn decode(&self, ip: IpAddr) -> Result<Option<Location>, MaxMindDbError> {
        if ip.is_ipv6() && self.info.ip_version == 4 {
            return Ok(None);
        }
        let block = block_key(ip);
        if let Some(answer) = self.blocks.get(block) {
            return Ok(answer);
        }
        let result = self.reader.lookup(ip)?;
        let whole_block = result
            .network()
            .is_ok_and(|n| covers_block(ip, n.is_ipv4(), n.prefix()));
        let Some(offset) = result.offset() else {
            if whole_block {
                self.blocks.put(block, None);
            }
            return Ok(None);
        };
        let offset = offset as u64;
        if let Some(answer) = self.records.get(offset) {
            if whole_block {
                self.blocks.put(block, answer);
            }
            return Ok(answer);
        }
        let Some(r) = result.decode::<Record<'_>>()? else {
            return Ok(None);
        };
        let country = |code: Option<&str>| code.and_then(|c| CountryCode::parse(c).ok());
        let location = Location {
            country: country(r.country).or_else(|| country(r.registered_country)),
            continent: r.continent.and_then(|c| ContinentCode::parse(c).ok()),
            subdivision: r.subdivision.and_then(SubdivisionCode::parse),
            point: r
                .latitude
                .zip(r.longitude)
                .and_then(|(lat, lon)| GeoPoint::new(lat, lon)),
        };
        self.records.put(offset, Some(location));
        if whole_block {
            self.blocks.put(block, Some(location));
        }
        Ok(Some(location))
    }
}

/// Whether a metadata `database_type` names a database with City/Country
/// shaped records (GeoIP2/GeoLite2 City and Country, GeoIP2 Enterprise,
/// DBIP-City-Lite, DBIP-Country-Lite, our own sample, ...).
fn is_supported_type(database_type: &str) -> bool {
    let t = database_type.to_ascii_lowercase();
    t.contains("city") || t.contains("country") || t.contains("enterprise")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges() {
        for p in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.10.10",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip(p)), "{p} should be private");
        }
        for p in [
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "2001:db8::1",
            "2001:4860:4860::8888",
            "fec0::1",
            "::ffff:8.8.8.8",
            "224.0.0.1",
        ] {
            assert!(!is_private(ip(p)), "{p} should not be private");
        }
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(canonical(ip("::ffff:81.2.69.160")), ip("81.2.69.160"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        // IPv4-compatible (deprecated) addresses stay IPv6.
        assert_eq!(canonical(ip("::81.2.69.160")), ip("::81.2.69.160"));
    }

    #[test]
    fn supported_types() {
        for t in [
            "GeoIP2-City",
            "GeoLite2-City",
            "GeoLite2-Country",
            "GeoIP2-Country",
            "DBIP-City-Lite",
            "DBIP-Country-Lite",
            "GeoIP2-Enterprise",
            "GeoEdge-Sample-City",
        ] {
            assert!(is_supported_type(t), "{t}");
        }
        for t in ["GeoLite2-ASN", "GeoIP2-ISP", "", "GeoIP2-Anonymous-IP"] {
            assert!(!is_supported_type(t), "{t}");
        }
    }

    #[test]
    fn lookup_labels() {
        assert_eq!(Lookup::NotFound.label(), "not_found");
        assert_eq!(Lookup::Found(Location::default()).label(), "found");
        assert!(Lookup::Private.location().is_none());
    }
}
