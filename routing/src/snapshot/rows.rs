//! Validation of the `backends` rows. Each valid row becomes a [`ValidRow`]
//! that borrows its texts from the raw table, so checking a valid row
//! allocates nothing; the row then either builds a new [`Backend`] or is
//! found to describe, exactly, a backend of the snapshot in service, which
//! is kept as it is (see [`super::assemble`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use geoedge_geoip::{CountryCode, GeoPoint};

use super::cells::Cells;
use super::{FastMap, RowError, MAX_LIMIT};
use crate::model::{AppId, Backend, BackendId, BackendLoad, Region, RegionId};
use crate::raw::{BackendRow, Value};

/// One valid `backends` row, its texts borrowed from the raw table.
#[derive(Debug, Clone, Copy)]
pub(super) struct ValidRow<'a> {
    /// `id`, trimmed.
    pub id: &'a str,
    /// `app`, trimmed (`default` when NULL).
    pub app: &'a str,
    /// `region`, trimmed: a region of the table.
    pub region: &'a str,
    /// Index of `region` in the table's sorted regions.
    pub region_idx: u16,
    /// `country`.
    pub country: Option<CountryCode>,
    /// The row's coordinates, or its region's.
    pub site: GeoPoint,
    /// `wg_ip`:`port`.
    pub addr: SocketAddr,
    /// `healthy`.
    pub healthy: bool,
    /// `weight`.
    pub weight: u32,
    /// `soft_limit`.
    pub soft: u32,
    /// `hard_limit`.
    pub hard: u32,
    /// `deleted`.
    pub deleted: bool,
}

/// The same coordinates, bit for bit (so that `-0.0` and `0.0`, equal as
/// numbers, are not taken for each other: the full rebuild keeps the row's
/// own).
fn same_point(a: GeoPoint, b: GeoPoint) -> bool {
    a.latitude.to_bits() == b.latitude.to_bits() && a.longitude.to_bits() == b.longitude.to_bits()
}

impl ValidRow<'_> {
    /// True when `b` is exactly the backend this row builds against the
    /// same regions, counters aside: every field, the region's index
    /// included, so `b` can stand for the row.
    pub fn describes(&self, b: &Backend) -> bool {
        b.id.as_str() == self.id
            && b.app.as_str() == self.app
            && b.region.as_str() == self.region
            && b.region_idx == self.region_idx
            && b.country == self.country
            && same_point(b.site, self.site)
            && b.addr == self.addr
            && b.healthy == self.healthy
            && b.weight == self.weight
            && b.soft_limit == self.soft
            && b.hard_limit == self.hard
            && b.deleted == self.deleted
    }

    /// The backend this row describes, with the given ids (equal to the
    /// row's texts; passed in so that they can be shared) and counters.
    pub fn backend(
        &self,
        id: BackendId,
        app: AppId,
        region: RegionId,
        load: Arc<BackendLoad>,
    ) -> Backend {
        Backend {
            id,
            app,
            region,
            region_idx: self.region_idx,
            country: self.country,
            site: self.site,
            site_vec: self.site.unit_vector(),
            addr: self.addr,
            healthy: self.healthy,
            weight: self.weight,
            soft_limit: self.soft,
            hard_limit: self.hard,
            deleted: self.deleted,
            load,
        }
    }
}

/// Validates every `backends` row: the valid ones in row order, and one
/// [`RowError`] per problem of the others.
pub(super) fn validate<'a>(
    rows: &'a [BackendRow],
    regions: &[Region],
    region_index: &FastMap<RegionId, u16>,
    errors: &mut Vec<RowError>,
) -> Vec<ValidRow<'a>> {
    let mut valid: Vec<ValidRow<'a>> = Vec::with_capacity(rows.len());
    let mut seen: hashbrown::HashSet<&'a str, foldhash::fast::RandomState> =
        hashbrown::HashSet::with_capacity_and_hasher(rows.len(), Default::default());
    for r in rows {
        let before = errors.len();
        let mut c = Cells {
            errors: &mut *errors,
            table: "backends",
            id: &r.id,
            rowid: r.rowid,
        };
        let id = c.text("id", &r.id, true);
        if let Some(id) = id {
            if !seen.insert(id) {
                c.err(Some("id"), "duplicate backend id".into());
            }
        }
        let app = match &r.app {
            Value::Null => Some("default"),
            v => c.text("app", v, true),
        };
        let region = c
            .text("region", &r.region, true)
            .and_then(|id| match region_index.get(id) {
                Some(&i) => Some((id, i)),
                None => {
                    c.err(Some("region"), format!("unknown region {id:?}"));
                    None
                }
            });
        let country = c.country("country", &r.country, false);
        let point = c.point(&r.latitude, &r.longitude, false);
        let ip = c.text("wg_ip", &r.wg_ip, true).and_then(|s| {
            // Accept a bracketed IPv6 literal too.
            let t = s.trim_start_matches('[').trim_end_matches(']');
            match t.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    c.err(
                        Some("wg_ip"),
                        format!("{s:?} is not an IPv4 or IPv6 address"),
                    );
                    None
                }
            }
        });
        let port = c.int("port", &r.port, None, (1, 65535));
        let healthy = c.flag("healthy", &r.healthy, true);
        let weight = c.int("weight", &r.weight, Some(1), (0, MAX_LIMIT));
        let soft = c.int("soft_limit", &r.soft_limit, None, (0, MAX_LIMIT));
        let hard = c.int("hard_limit", &r.hard_limit, None, (0, MAX_LIMIT));
        let deleted = c.flag("deleted", &r.deleted, false);
        if let (Some(s), Some(h)) = (soft, hard) {
            if s > h {
                c.err(
                    Some("soft_limit"),
                    format!("soft_limit {s} is above hard_limit {h} (inverted limits)"),
                );
            }
        }
        if errors.len() != before {
            continue;
        }
        // All parts are present when no error was recorded.
        let (Some(id), Some(app), Some((region, region_idx)), Some(country), Some(point)) =
            (id, app, region, country, point)
        else {
            continue;
        };
        let (
            Some(ip),
            Some(port),
            Some(healthy),
            Some(weight),
            Some(soft),
            Some(hard),
            Some(deleted),
        ) = (ip, port, healthy, weight, soft, hard, deleted)
        else {
            continue;
        };
        valid.push(ValidRow {
            id,
            app,
            region,
            region_idx,
            country,
            site: point.unwrap_or(regions[region_idx as usize].point),
            addr: SocketAddr::new(ip, port as u16),
            healthy,
            weight: weight as u32,
            soft: soft as u32,
            hard: hard as u32,
            deleted,
        });
    }
    valid
}
