//! Proximity-and-load scoring: where a client is placed and which backend
//! serves it best.
//!
//! Pure: reads a [`Snapshot`] and the backends' live counters, takes no lock,
//! allocates nothing on the decision path ([`best`]), and never reads a clock.
//!
//! The order, best first, is the lexicographic order of
//! 1. under the soft limit before at or over it (spill-over happens only when
//!    every nearer backend is at or over soft);
//! 2. proximity tier: same country, then same region, then the rest;
//! 3. within the rest, shorter great-circle distance (exact: backends at the
//!    same site are at the same proximity);
//! 4. lower load `active ÷ (soft_limit × weight)`;
//! 5. backend id, so ties break deterministically.
//!
//! A backend is eligible when healthy, not deleted, of non-zero weight, of the
//! requested app, below its hard limit, and admitted by its health (not down
//! by active checks, not ejected after connect failures unless its trial is
//! due; see [`crate::health`]).

use std::cmp::Ordering;
use std::time::Instant;

use geoedge_geoip::{ContinentCode, CountryCode, GeoPoint, Location};

use crate::model::{Backend, BackendId};
use crate::snapshot::{AppView, HotBackend, Snapshot};

/// How near a backend is to a client, coarsest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The backend's site is in the client's country.
    Country,
    /// The backend is in the region the client's country maps to.
    Region,
    /// Neither: ordered by great-circle distance.
    Distance,
}

impl Tier {
    /// The tier as a lower-case label (`country`, `region`, `distance`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Country => "country",
            Tier::Region => "region",
            Tier::Distance => "distance",
        }
    }
}

/// Where a client is, for scoring: its country, the region its country maps
/// to, and a point on the globe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// The client's country, when GeoIP knew it.
    pub country: Option<CountryCode>,
    /// The client's continent, when GeoIP knew it.
    pub continent: Option<ContinentCode>,
    /// Index of the client's region in the snapshot.
    pub region: Option<u16>,
    /// The point distances are measured from.
    pub point: Option<GeoPoint>,
    /// True when GeoIP located the client; false when it was placed at the POP's region.
    pub located: bool,
}

impl Placement {
    /// Places a client. Without a location (private address, not in the
    /// database, no database loaded) the client is placed at `local_region`,
    /// this POP's region. With a country but no coordinates (a Country
    /// database) the client is placed at its country's region.
    pub fn new(
        snapshot: &Snapshot,
        location: Option<&Location>,
        local_region: Option<u16>,
    ) -> Self {
        let region_point = |r: Option<u16>| r.and_then(|r| snapshot.region(r)).map(|r| r.point);
        let located = location.is_some_and(|l| l.country.is_some() || l.point.is_some());
        let (country, continent, region, point) = match location {
            Some(l) if located => {
                let region = snapshot.country_map.region_of(l.country, l.continent);
                let point = l
                    .point
                    .or_else(|| region_point(region))
                    .or_else(|| region_point(local_region));
                (l.country, l.continent, region, point)
            }
            _ => (None, None, local_region, region_point(local_region)),
        };
        Placement {
            country,
            continent,
            region,
            point,
            located,
        }
    }

    /// `point` as a unit vector; all zeros without a point, so that every
    /// site is then equally near. Computed only when the distance tier is
    /// reached (it costs four trigonometric calls).
    fn vector(&self) -> [f64; 3] {
        self.point.map_or([0.0; 3], |p| p.unit_vector())
    }

    /// How near backend `b` is to this client: its country, its region
    /// (the POP's, for a client GeoIP cannot place), or neither.
    pub fn tier_of(&self, b: &Backend) -> Tier {
        if self.country.is_some() && b.country == self.country {
            Tier::Country
        } else if self.region == Some(b.region_idx) {
            Tier::Region
        } else {
            Tier::Distance
        }
    }

    /// Great-circle distance to a backend's site, when the client has a point.
    pub fn distance_km(&self, b: &Backend) -> Option<f64> {
        self.point.map(|p| p.distance_km(&b.site))
    }
}

/// A scored backend: everything the order compares.
#[derive(Debug, Clone, Copy)]
pub struct Score {
    /// Index into [`Snapshot::backends`] (id order).
    pub index: u32,
    /// Connections held when scored: this edge's and, in a fleet, the
    /// other edges' reported ones.
    pub active: u32,
    /// At or over the soft limit.
    pub over_soft: bool,
    /// Proximity tier.
    pub tier: Tier,
    /// Cosine of the angle to the site (higher is nearer); compared only in the distance tier.
    closeness: f64,
    /// `soft_limit × weight` (soft limit 0 counts as 1).
    capacity: u64,
}

impl Score {
    fn of(index: u32, b: &Backend, p: &Placement, active: u32) -> Self {
        let tier = p.tier_of(b);
        let v = &b.site_vec;
        let pv = p.vector();
        Score {
            index,
            active,
            over_soft: active >= b.soft_limit,
            tier,
            closeness: if tier == Tier::Distance {
                pv[0] * v[0] + pv[1] * v[1] + pv[2] * v[2]
            } else {
                0.0
            },
            capacity: u64::from(b.soft_limit.max(1)) * u64::from(b.weight.max(1)),
        }
    }

    /// The load figure compared within a proximity level: `active ÷ (soft_limit × weight)`.
    pub fn load(&self) -> f64 {
        self.active as f64 / self.capacity as f64
    }

    /// Proximity alone: `Less` means `self` is nearer the client.
    pub fn proximity(&self, other: &Score) -> Ordering {
        self.tier
            .cmp(&other.tier)
            .then_with(|| other.closeness.total_cmp(&self.closeness))
    }

    /// The scoring order: `Less` means `self` is the better backend.
    pub fn order(&self, other: &Score) -> Ordering {
        self.over_soft
            .cmp(&other.over_soft)
            .then_with(|| self.proximity(other))
            .then_with(|| {
                let a = u128::from(self.active) * u128::from(other.capacity);
                let b = u128::from(other.active) * u128::from(self.capacity);
                a.cmp(&b)
            })
            .then(self.index.cmp(&other.index))
    }
}

/// The best eligible backend of an app for a placement at `now`, skipping
/// `exclude` (backends already tried for this connection) and backends
/// their health does not admit. No allocation.
///
/// A backend under its soft limit in the nearest tier beats everything
/// else, so the client's country and then its region are scanned first.
/// Failing those, the site groups (candidates by country, each with a
/// bounding cap) are scanned nearest cap first, stopping once the nearest
/// backend under soft found so far is nearer than any remaining cap can be.
/// Within a scan, a backend that cannot beat the best so far on soft-limit
/// status or tier is dismissed before any arithmetic.
pub fn best(
    snapshot: &Snapshot,
    view: &AppView,
    p: &Placement,
    exclude: &[BackendId],
    now: Instant,
) -> Option<Score> {
    let mut best: Option<Score> = None;
    let group = p.country.and_then(|c| view.hot_by_country.get(&c));
    let region = p.region.and_then(|r| view.hot_by_region.get(&r));
    for positions in [group, region].into_iter().flatten() {
        let members = positions.iter().map(|&i| &view.hot[i as usize]);
        // Country and region members are never in the distance tier: no vector needed.
        scan(snapshot, members, p, &[0.0; 3], exclude, now, &mut best);
        if best.is_some_and(|b| !b.over_soft) {
            return best;
        }
    }
    const MAX_GROUPS: usize = 64;
    let pv = p.vector();
    if view.sites.len() > MAX_GROUPS {
        scan(snapshot, view.hot.iter(), p, &pv, exclude, now, &mut best);
        return best;
    }
    // Upper bound of the closeness (cosine) of any site of each group.
    let mut order = [(0.0f64, 0u8); MAX_GROUPS];
    let n = view.sites.len();
    for (i, g) in view.sites.iter().enumerate() {
        order[i] = (g.max_closeness(&pv), i as u8);
    }
    let order = &mut order[..n];
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(bound, i) in order.iter() {
        if let Some(b) = best.filter(|b| !b.over_soft) {
            // A margin far above the rounding error of the bound.
            if bound < b.closeness - 1e-12 {
                break;
            }
        }
        let members = view.sites[i as usize]
            .members
            .iter()
            .map(|&m| &view.hot[m as usize]);
        scan(snapshot, members, p, &pv, exclude, now, &mut best);
    }
    best
}

fn scan<'a>(
    snapshot: &Snapshot,
    members: impl Iterator<Item = &'a HotBackend>,
    p: &Placement,
    pv: &[f64; 3],
    exclude: &[BackendId],
    now: Instant,
    best: &mut Option<Score>,
) {
    for h in members {
        if h.load.held() >= h.hard_limit || !h.load.health().admits(now) {
            continue;
        }
        let active = h.load.global(h.load.active());
        let over_soft = active >= h.soft_limit;
        let tier = hot_tier(h, p);
        if let Some(cur) = best {
            if (over_soft, tier) > (cur.over_soft, cur.tier) {
                continue;
            }
        }
        if !exclude.is_empty() && exclude.contains(&snapshot.backends[h.index as usize].id) {
            continue;
        }
        let s = hot_score(h, active, tier, pv);
        if best.is_none_or(|cur| s.order(&cur) == Ordering::Less) {
            *best = Some(s);
        }
    }
}

fn hot_tier(h: &HotBackend, p: &Placement) -> Tier {
    if p.country.is_some() && h.country == p.country {
        Tier::Country
    } else if p.region == Some(h.region_idx) {
        Tier::Region
    } else {
        Tier::Distance
    }
}

fn hot_score(h: &HotBackend, active: u32, tier: Tier, pv: &[f64; 3]) -> Score {
    let v = &h.site_vec;
    Score {
        index: h.index,
        active,
        over_soft: active >= h.soft_limit,
        tier,
        closeness: if tier == Tier::Distance {
            pv[0] * v[0] + pv[1] * v[1] + pv[2] * v[2]
        } else {
            0.0
        },
        capacity: h.capacity,
    }
}

/// Whether a backend in the client's country can take clients but is at
/// or over its soft limit by the fleet's load: the only way a best choice
/// in the client's region is a spill. A look at the country's few
/// backends, so that region-tier decisions that do not spill skip
/// [`spill_window`]'s scan of every backend.
pub fn country_is_full(view: &AppView, p: &Placement, now: Instant) -> bool {
    let Some(members) = p.country.and_then(|c| view.hot_by_country.get(&c)) else {
        return false;
    };
    members.iter().any(|&i| {
        let h = &view.hot[i as usize];
        h.load.held() < h.hard_limit
            && h.load.health().admits(now)
            && h.load.global(h.load.active()) >= h.soft_limit
    })
}

/// How many next-nearest backends with room a spill is spread over.
pub const SPILL_WIDTH: usize = 3;

/// The backends a spill is spread over: the first [`SPILL_WIDTH`]
/// eligible backends under their soft limit, in scoring order, each with
/// its headroom (soft limit minus the fleet's load).
#[derive(Debug, Clone, Copy)]
pub struct SpillWindow {
    /// Best first; the first `len` are set.
    pub scores: [Score; SPILL_WIDTH],
    /// Room left under each one's soft limit.
    pub headroom: [u32; SPILL_WIDTH],
    /// How many are set (2 or more).
    pub len: usize,
}

/// When the best backend under its soft limit is a spill (an eligible
/// backend strictly nearer the client is at or over its soft limit), the
/// window of next backends to spread it over; `None` when it is no spill
/// or only one backend has room. Scans every backend of the app: called
/// only in a fleet, and only when the best choice is outside the client's
/// country (within it, every backend is equally near and nothing spills)
/// and, for one in the client's region, when [`country_is_full`].
pub fn spill_window(
    snapshot: &Snapshot,
    view: &AppView,
    p: &Placement,
    exclude: &[BackendId],
    now: Instant,
) -> Option<SpillWindow> {
    let pv = p.vector();
    let mut top: [Option<Score>; SPILL_WIDTH] = [None; SPILL_WIDTH];
    let mut nearest_full: Option<Score> = None;
    for h in &view.hot {
        if h.load.held() >= h.hard_limit || !h.load.health().admits(now) {
            continue;
        }
        if !exclude.is_empty() && exclude.contains(&snapshot.backends[h.index as usize].id) {
            continue;
        }
        let active = h.load.global(h.load.active());
        let s = hot_score(h, active, hot_tier(h, p), &pv);
        if s.over_soft {
            if nearest_full.is_none_or(|n| s.proximity(&n).is_lt()) {
                nearest_full = Some(s);
            }
            continue;
        }
        // Insertion into the few best, in scoring order.
        let mut carry = Some(s);
        for slot in top.iter_mut() {
            match (*slot, carry) {
                (_, None) => break,
                (None, c) => {
                    *slot = c;
                    carry = None;
                }
                (Some(held), Some(c)) if c.order(&held).is_lt() => {
                    *slot = Some(c);
                    carry = Some(held);
                }
                _ => {}
            }
        }
    }
    let first = top[0]?;
    if !nearest_full.is_some_and(|n| n.proximity(&first).is_lt()) {
        return None;
    }
    let len = top.iter().filter(|s| s.is_some()).count();
    if len < 2 {
        return None;
    }
    let mut scores = [first; SPILL_WIDTH];
    let mut headroom = [0u32; SPILL_WIDTH];
    for (i, s) in top.iter().take(len).enumerate() {
        let s = s.unwrap_or(first);
        scores[i] = s;
        headroom[i] = snapshot.backends[s.index as usize]
            .soft_limit
            .saturating_sub(s.active);
    }
    Some(SpillWindow {
        scores,
        headroom,
        len,
    })
}

/// Why a backend cannot take a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhyNot {
    /// `healthy = 0`.
    Unhealthy,
    /// `deleted = 1`.
    Deleted,
    /// `weight = 0`.
    ZeroWeight,
    /// Active health checks failed `fall` times in a row.
    Down,
    /// Ejected after consecutive connect failures.
    Ejected,
    /// `active >= hard_limit`.
    AtHardLimit,
    /// Already tried for this connection.
    Excluded,
}

/// One backend of the app with its score and, if ineligible, why.
#[derive(Debug, Clone, Copy)]
pub struct Ranked {
    /// The score (computed for ineligible backends too).
    pub score: Score,
    /// `None` when eligible.
    pub why_not: Option<WhyNot>,
}

/// Every backend of an app, eligible ones first in scoring order, then the
/// ineligible ones in the same order. For explanations, not the hot path.
pub fn rank(
    snapshot: &Snapshot,
    view: &AppView,
    p: &Placement,
    exclude: &[BackendId],
) -> Vec<Ranked> {
    let mut v: Vec<Ranked> = view
        .all
        .iter()
        .map(|&i| {
            let b = &snapshot.backends[i as usize];
            let active = b.load.global(b.load.active());
            let why_not = if !b.healthy {
                Some(WhyNot::Unhealthy)
            } else if b.deleted {
                Some(WhyNot::Deleted)
            } else if b.weight == 0 {
                Some(WhyNot::ZeroWeight)
            } else if b.load.health().is_down() {
                Some(WhyNot::Down)
            } else if b.load.health().is_ejected() {
                Some(WhyNot::Ejected)
            } else if b.load.held() >= b.hard_limit {
                Some(WhyNot::AtHardLimit)
            } else if exclude.contains(&b.id) {
                Some(WhyNot::Excluded)
            } else {
                None
            };
            Ranked {
                score: Score::of(i, b, p, active),
                why_not,
            }
        })
        .collect();
    v.sort_by(|a, b| {
        a.why_not
            .is_some()
            .cmp(&b.why_not.is_some())
            .then(a.score.order(&b.score))
    });
    v
}

#[cfg(test)]
mod tests;
