//! Validation of a whole [`RawTable`] into an immutable [`Snapshot`].
//!
//! Pure: no IO, no clock. Every row-level problem is collected (not just the
//! first) so `geoedge db check` and the reload log can list them all; a table
//! with any error produces no snapshot at all, so a bad edit can never
//! replace a good table.
//!
//! [`build`] makes a snapshot from nothing; [`rebuild`] validates every row
//! the same way but keeps the parts of the snapshot in service that the
//! rows describe unchanged (see [`assemble`]), so a reload
//! allocates in proportion to what it changed. Both give the same snapshot.

use std::collections::HashMap;
use std::sync::Arc;

use geoedge_geoip::{ContinentCode, CountryCode, GeoPoint};

use crate::builtin;
use crate::model::{AppId, Backend, BackendId, BackendLoad, Region, RegionId};
use crate::raw::{RawTable, Value};
pub use crate::row_error::RowError;
use crate::wg_peers::WgPeer;

mod apps;
mod assemble;
mod cells;
mod rows;
mod sni;
pub use apps::{AppLimits, MAX_RATE_PERIOD_SECONDS};
use cells::Cells;
pub(crate) use sni::SniRoutes;
pub use sni::{MAX_HOSTNAME, MAX_LABEL};

/// The newest routing.db schema version this build understands.
pub const SCHEMA_VERSION: i64 = 3;

/// Largest accepted limit or weight; keeps `active × soft × weight` in `u64`.
pub const MAX_LIMIT: i64 = 1 << 24;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A table that cannot be used: every row-level error found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routing table rejected: {}", summary(.errors))]
pub struct InvalidTable {
    /// Every problem found, in row order.
    pub errors: Vec<RowError>,
}

fn summary(errors: &[RowError]) -> String {
    let mut s = errors
        .iter()
        .take(5)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > 5 {
        s.push_str(&format!("; and {} more", errors.len() - 5));
    }
    s
}

/// Maps a client's country to a region: the table's `country_regions`, or the
/// built-in map with its continent fallback.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountryMap {
    /// Explicit country → region index.
    by_country: FastMap<CountryCode, u16>,
    /// Continent → region index, used only with the built-in map.
    by_continent: FastMap<ContinentCode, u16>,
}

impl CountryMap {
    /// The region index for a country (or, with the built-in map, its continent).
    pub fn region_of(
        &self,
        country: Option<CountryCode>,
        continent: Option<ContinentCode>,
    ) -> Option<u16> {
        country
            .and_then(|c| self.by_country.get(&c).copied())
            .or_else(|| continent.and_then(|c| self.by_continent.get(&c).copied()))
    }

    /// Number of explicit country entries.
    pub fn len(&self) -> usize {
        self.by_country.len()
    }

    /// True when no country is mapped.
    pub fn is_empty(&self) -> bool {
        self.by_country.is_empty()
    }
}

/// The backends of one app, by index into [`Snapshot::backends`].
#[derive(Debug, Clone, Default)]
pub struct AppView {
    /// Every backend of the app, in id order.
    pub all: Vec<u32>,
    /// Those that are healthy, not deleted and of non-zero weight, in id order.
    pub candidates: Vec<u32>,
    /// The fields scoring reads for each of `candidates`, packed together so
    /// that a scan over a thousand backends stays in cache.
    pub(crate) hot: Vec<HotBackend>,
    /// Positions in `hot` of the candidates in each country (shared by the
    /// views of two tables whose candidates differ only in load fields).
    pub(crate) hot_by_country: Arc<FastMap<CountryCode, Vec<u32>>>,
    /// Positions in `hot` of the candidates in each region (by region index).
    pub(crate) hot_by_region: Arc<FastMap<u16, Vec<u32>>>,
    /// The candidates partitioned into site groups (by country, or by region
    /// for backends without one), each with a bounding cap on the sphere, so
    /// the distance tier can skip groups that cannot hold the nearest backend.
    pub(crate) sites: Arc<Vec<SiteGroup>>,
}

/// A set of candidates and the smallest known cap around their sites.
#[derive(Debug, Clone)]
pub(crate) struct SiteGroup {
    /// Positions in [`AppView::hot`].
    pub members: Vec<u32>,
    /// Unit vector of the cap's centre.
    pub center: [f64; 3],
    /// Cosine of the cap's angular radius: no member is farther from `center`.
    pub cos_radius: f64,
    /// Sine of the cap's angular radius.
    pub sin_radius: f64,
}

impl SiteGroup {
    /// The largest cosine of the angle from `v` (a unit vector, or zero) to
    /// any point of the cap: an upper bound on the closeness of every member.
    pub fn max_closeness(&self, v: &[f64; 3]) -> f64 {
        let c = &self.center;
        let cos_a = (v[0] * c[0] + v[1] * c[1] + v[2] * c[2]).clamp(-1.0, 1.0);
        if cos_a >= self.cos_radius {
            // Inside the cap.
            return 1.0;
        }
        // cos(a - r) = cos a cos r + sin a sin r, with a > r.
        let sin_a = (1.0 - cos_a * cos_a).max(0.0).sqrt();
        cos_a * self.cos_radius + sin_a * self.sin_radius
    }
}

impl AppView {
    fn index_sites(&mut self) {
        let mut groups: FastMap<(Option<CountryCode>, u16), Vec<u32>> = FastMap::default();
        for (pos, h) in self.hot.iter().enumerate() {
            let key = (
                h.country,
                if h.country.is_some() { 0 } else { h.region_idx },
            );
            groups.entry(key).or_default().push(pos as u32);
        }
        let mut sites: Vec<SiteGroup> = groups
            .into_values()
            .map(|members| {
                let mut c = [0.0f64; 3];
                for &m in &members {
                    let v = self.hot[m as usize].site_vec;
                    c = [c[0] + v[0], c[1] + v[1], c[2] + v[2]];
                }
                let norm = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
                let center = if norm > 1e-9 {
                    [c[0] / norm, c[1] / norm, c[2] / norm]
                } else {
                    self.hot[members[0] as usize].site_vec
                };
                let radius = members
                    .iter()
                    .map(|&m| angle(&center, &self.hot[m as usize].site_vec))
                    .fold(0.0, f64::max);
                SiteGroup {
                    members,
                    center,
                    cos_radius: radius.cos(),
                    sin_radius: radius.sin(),
                }
            })
            .collect();
        sites.sort_by_key(|g| g.members[0]);
        self.sites = Arc::new(sites);
    }
}

/// The angle between two unit vectors, in radians.
pub(crate) fn angle(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    (a[0] * b[0] + a[1] * b[1] + a[2] * b[2])
        .clamp(-1.0, 1.0)
        .acos()
}

/// What [`crate::score::best`] reads of one candidate, in one cache line.
#[derive(Debug, Clone)]
pub(crate) struct HotBackend {
    /// Live connection counter.
    pub load: Arc<BackendLoad>,
    /// Site as a unit vector.
    pub site_vec: [f64; 3],
    /// `soft_limit × weight` (soft limit 0 counts as 1).
    pub capacity: u64,
    /// Index into [`Snapshot::backends`].
    pub index: u32,
    /// Soft limit.
    pub soft_limit: u32,
    /// Hard limit.
    pub hard_limit: u32,
    /// Region index.
    pub region_idx: u16,
    /// Site country.
    pub country: Option<CountryCode>,
}

/// One validated, immutable routing table. Decisions read it without locks;
/// a reload builds a new one and swaps it in whole.
#[derive(Debug)]
pub struct Snapshot {
    /// Schema version the table was read with.
    pub schema_version: i64,
    /// Every backend, sorted by id.
    pub backends: Vec<Arc<Backend>>,
    /// Backend id → index in `backends` (shared with the previous snapshot
    /// when the ids are the same).
    by_id: Arc<FastMap<BackendId, u32>>,
    /// App → its backends (a view shared with the previous snapshot when
    /// the app's backends are).
    apps: FastMap<AppId, Arc<AppView>>,
    /// Backends not soft-deleted.
    live: usize,
    /// Regions, sorted by id; indices are the `region_idx` of backends.
    pub regions: Vec<Region>,
    /// Region id → index in `regions`.
    region_index: FastMap<RegionId, u16>,
    /// Country → region.
    pub country_map: CountryMap,
    /// True when the regions came from the built-in list.
    pub builtin_regions: bool,
    /// True when the country map is the built-in one.
    pub builtin_countries: bool,
    /// WireGuard peers (`wg_peers`), sorted by public key.
    pub wg_peers: Vec<WgPeer>,
    /// Per-app limits (`apps`), shared with the previous snapshot when the
    /// same.
    pub(crate) app_limits: Arc<FastMap<AppId, AppLimits>>,
    /// Server name routes (`sni_routes`), shared with the previous snapshot
    /// when the same.
    pub(crate) sni_routes: Arc<SniRoutes>,
}

impl Snapshot {
    /// A table with no backends and the built-in regions.
    pub fn empty() -> Self {
        build(&RawTable::default(), |_| Arc::default()).expect("the built-in table is valid")
    }

    /// Backend by id.
    pub fn backend(&self, id: &str) -> Option<&Arc<Backend>> {
        self.by_id.get(id).map(|&i| &self.backends[i as usize])
    }

    /// The backends of one app, if it has any.
    pub fn app(&self, app: &str) -> Option<&AppView> {
        self.apps.get(app).map(|v| &**v)
    }

    /// Apps in the table, sorted.
    pub fn apps(&self) -> Vec<&AppId> {
        let mut v: Vec<_> = self.apps.keys().collect();
        v.sort();
        v
    }

    /// Index of a region by id.
    pub fn region_index(&self, id: &str) -> Option<u16> {
        self.region_index.get(id).copied()
    }

    /// Region by index.
    pub fn region(&self, idx: u16) -> Option<&Region> {
        self.regions.get(idx as usize)
    }

    /// Number of backends (including deleted and unhealthy ones).
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// True when the table has no backends at all.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Number of backends that are not soft-deleted.
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// The `apps` row of an app (its overrides of the per-client limits),
    /// if it has one.
    pub fn app_limits(&self, app: &str) -> Option<&AppLimits> {
        self.app_limits.get(app)
    }

    /// Number of `apps` rows.
    pub fn app_limits_len(&self) -> usize {
        self.app_limits.len()
    }

    /// The app a TLS server name is routed to by `sni_routes`: the exact
    /// name, else the longest matching `*.` wildcard. `server_name` must be
    /// lower-case already (as the table's hostnames are); no allocation.
    pub fn sni_route(&self, server_name: &str) -> Option<&AppId> {
        self.sni_routes.route(server_name)
    }

    /// Number of `sni_routes` rows.
    pub fn sni_routes_len(&self) -> usize {
        self.sni_routes.len()
    }
}

/// Validates a whole table and builds a snapshot. `load_for` supplies the
/// live connection counter for each backend id (the table keeps them across
/// reloads); it is called only when the table is valid.
pub fn build(
    raw: &RawTable,
    load_for: impl FnMut(&BackendId) -> Arc<BackendLoad>,
) -> Result<Snapshot, InvalidTable> {
    make(raw, None, load_for)
}

/// Validates a whole table, exactly as [`build`] does, and builds the
/// snapshot that [`build`] would, reusing what `prev` already has right:
/// its backends that the rows describe exactly (the same `Arc`s), the id
/// index and app views they make up. A backend of `prev` whose row changed
/// is built anew with `prev`'s counters; `load_for` is asked only for ids
/// `prev` does not have, and only when the table is valid.
pub fn rebuild(
    raw: &RawTable,
    prev: &Snapshot,
    load_for: impl FnMut(&BackendId) -> Arc<BackendLoad>,
) -> Result<Snapshot, InvalidTable> {
    make(raw, Some(prev), load_for)
}

fn make(
    raw: &RawTable,
    prev: Option<&Snapshot>,
    load_for: impl FnMut(&BackendId) -> Arc<BackendLoad>,
) -> Result<Snapshot, InvalidTable> {
    let mut errors = Vec::new();
    if raw.schema_version > SCHEMA_VERSION || raw.schema_version < 0 {
        errors.push(RowError {
            table: "routing.db",
            row: "schema".into(),
            column: None,
            message: format!(
                "user_version {} is not supported (this build reads 0..={SCHEMA_VERSION})",
                raw.schema_version
            ),
        });
        return Err(InvalidTable { errors });
    }

    // Regions.
    let mut regions: Vec<Region> = Vec::new();
    let builtin_regions = raw.regions.is_none();
    match &raw.regions {
        None => {
            for &(id, name, lat, lon) in builtin::REGIONS {
                regions.push(Region {
                    id: RegionId::new(id),
                    name: Some(name.to_owned()),
                    point: GeoPoint::new(lat, lon).expect("built-in coordinates are valid"),
                });
            }
        }
        Some(rows) => {
            let mut seen: FastMap<&str, ()> = FastMap::default();
            for r in rows {
                let mut c = Cells {
                    errors: &mut errors,
                    table: "regions",
                    id: &r.id,
                    rowid: r.rowid,
                };
                let id = c.text("id", &r.id, true);
                let name = match &r.name {
                    Value::Text(s) => Some(s.clone()),
                    _ => None,
                };
                let point = c.point(&r.latitude, &r.longitude, true);
                if let Some(id) = id {
                    if seen.insert(id, ()).is_some() {
                        c.err(Some("id"), "duplicate region id".into());
                        continue;
                    }
                }
                if let (Some(id), Some(Some(point))) = (id, point) {
                    regions.push(Region {
                        id: RegionId::new(id),
                        name,
                        point,
                    });
                }
            }
        }
    }
    regions.sort_by(|a, b| a.id.cmp(&b.id));
    if regions.len() > u16::MAX as usize {
        errors.push(RowError {
            table: "regions",
            row: "table".into(),
            column: None,
            message: format!("{} regions is more than {}", regions.len(), u16::MAX),
        });
        return Err(InvalidTable { errors });
    }
    let region_index: FastMap<RegionId, u16> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i as u16))
        .collect();

    // Country map.
    let mut country_map = CountryMap::default();
    let builtin_countries = raw.country_regions.is_none();
    match &raw.country_regions {
        None => {
            let lookup = |id: &str| region_index.get(id).copied();
            for &(c, r) in builtin::COUNTRIES {
                if let (Ok(c), Some(r)) = (CountryCode::parse(c), lookup(r)) {
                    country_map.by_country.insert(c, r);
                }
            }
            for &(c, r) in builtin::CONTINENTS {
                if let (Ok(c), Some(r)) = (ContinentCode::parse(c), lookup(r)) {
                    country_map.by_continent.insert(c, r);
                }
            }
        }
        Some(rows) => {
            for r in rows {
                let mut c = Cells {
                    errors: &mut errors,
                    table: "country_regions",
                    id: &r.country,
                    rowid: r.rowid,
                };
                let country = c.country("country", &r.country, true);
                let region = c.text("region", &r.region, true);
                let region = region.and_then(|id| match region_index.get(id) {
                    Some(&i) => Some(i),
                    None => {
                        c.err(Some("region"), format!("unknown region {id:?}"));
                        None
                    }
                });
                if let (Some(Some(country)), Some(region)) = (country, region) {
                    if country_map.by_country.insert(country, region).is_some() {
                        c.err(Some("country"), "duplicate country".into());
                    }
                }
            }
        }
    }

    // Backends.
    let valid = rows::validate(&raw.backends, &regions, &region_index, &mut errors);

    let wg_peers =
        crate::wg_peers::validate(&raw.wg_peers, |r| region_index.contains_key(r), &mut errors);

    let app_limits = apps::validate(&raw.apps, &mut errors);
    let sni_routes = if raw.sni_routes.is_empty() {
        SniRoutes::default()
    } else {
        // The apps the table knows: of every backend row (deleted or not)
        // and of every `apps` row.
        // A route to an app whose `apps` row has an error of its own is
        // not reported unknown as well.
        fn text(v: &Value) -> Option<&str> {
            match v {
                Value::Text(s) if !s.trim().is_empty() => Some(s.trim()),
                _ => None,
            }
        }
        let known: std::collections::HashSet<&str, foldhash::fast::RandomState> = raw
            .backends
            .iter()
            .filter_map(|r| match &r.app {
                Value::Null => Some("default"),
                v => text(v),
            })
            .chain(raw.apps.iter().filter_map(|r| text(&r.app)))
            .collect();
        sni::validate(&raw.sni_routes, |a| known.contains(a), &mut errors)
    };

    if !errors.is_empty() {
        return Err(InvalidTable { errors });
    }

    let assemble::Assembled {
        backends,
        by_id,
        apps,
        live,
    } = assemble::assemble(valid, &regions, prev, load_for);
    let app_limits = match prev {
        Some(p) if *p.app_limits == app_limits => Arc::clone(&p.app_limits),
        _ => Arc::new(app_limits),
    };
    let sni_routes = match prev {
        Some(p) if *p.sni_routes == sni_routes => Arc::clone(&p.sni_routes),
        _ => Arc::new(sni_routes),
    };
    Ok(Snapshot {
        schema_version: raw.schema_version,
        backends,
        by_id,
        apps,
        live,
        regions,
        region_index,
        country_map,
        builtin_regions,
        builtin_countries,
        wg_peers,
        app_limits,
        sni_routes,
    })
}

/// Validates a table without keeping it: every row-level error, or none.
pub fn check(raw: &RawTable) -> Vec<RowError> {
    match build(raw, |_| Arc::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors,
    }
}

#[cfg(test)]
pub(crate) mod reuse_tests;
#[cfg(test)]
mod tests;
