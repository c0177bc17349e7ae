//! Building a snapshot's backends, id index and app views from validated
//! rows, keeping whatever the snapshot in service already has right.
//!
//! The rows and the previous snapshot's backends are both sorted by id and
//! walked together once. A backend the row describes exactly
//! ([`ValidRow::describes`]) is kept (the same `Arc`, nothing allocated); a
//! changed one is built anew with the previous one's counters; only an id
//! the previous snapshot lacks asks `load_for`. The id index is shared when
//! the ids are the same, and an app's view (its candidates, their packed
//! scoring fields and site groups) when its backends are all kept at the
//! same positions; when only weights or limits changed, the view's packed
//! fields are copied with those entries rewritten and its indices shared
//! ([`AppView::patched`]). So, after validation, what a reload allocates is
//! proportional to what it changed; what stays proportional to the table is
//! a pass of pointer copies and comparisons (and, for an app whose
//! candidates changed, rebuilding that app's view).

use std::sync::Arc;

use geoedge_geoip::CountryCode;

use super::rows::ValidRow;
use super::{AppView, FastMap, HotBackend, Snapshot};
use crate::model::{AppId, Backend, BackendId, BackendLoad, Region};

/// What [`assemble`] builds.
pub(super) struct Assembled {
    /// Every backend, sorted by id.
    pub backends: Vec<Arc<Backend>>,
    /// Backend id → index in `backends`.
    pub by_id: Arc<FastMap<BackendId, u32>>,
    /// App → its backends.
    pub apps: FastMap<AppId, Arc<AppView>>,
    /// Backends not soft-deleted.
    pub live: usize,
}

/// Builds the backends of `rows` (valid, in any order), reusing those of
/// `prev` that they describe exactly. `load_for` is asked for the counters
/// of ids `prev` does not have; the others keep `prev`'s.
pub(super) fn assemble<'a>(
    mut rows: Vec<ValidRow<'a>>,
    regions: &[Region],
    prev: Option<&Snapshot>,
    mut load_for: impl FnMut(&BackendId) -> Arc<BackendLoad>,
) -> Assembled {
    // Stable, and a table already in id order (rows inserted in id order)
    // costs one pass.
    rows.sort_by(|a, b| a.id.cmp(b.id));
    let old: &[Arc<Backend>] = prev.map_or(&[], |p| &p.backends);
    // Each app's id made once, and shared by its backends.
    let mut app_ids: FastMap<&'a str, AppId> = FastMap::default();
    let mut app_id = |s: &'a str| -> AppId {
        app_ids
            .entry(s)
            .or_insert_with(|| {
                prev.and_then(|p| p.apps.get_key_value(s))
                    .map_or_else(|| AppId::new(s), |(k, _)| k.clone())
            })
            .clone()
    };

    let mut backends: Vec<Arc<Backend>> = Vec::with_capacity(rows.len());
    // Whether each backend is the previous snapshot's, unchanged.
    let mut kept: Vec<bool> = Vec::with_capacity(rows.len());
    // Whether the ids are exactly the previous snapshot's.
    let mut same_ids = prev.is_some();
    let mut live = 0;
    let mut j = 0;
    for row in &rows {
        while old.get(j).is_some_and(|o| o.id.as_str() < row.id) {
            same_ids = false;
            j += 1;
        }
        let region = || regions[row.region_idx as usize].id.clone();
        let b = match old.get(j) {
            Some(o) if o.id.as_str() == row.id => {
                j += 1;
                if row.describes(o) {
                    kept.push(true);
                    Arc::clone(o)
                } else {
                    kept.push(false);
                    let app = if o.app.as_str() == row.app {
                        o.app.clone()
                    } else {
                        app_id(row.app)
                    };
                    Arc::new(row.backend(o.id.clone(), app, region(), Arc::clone(&o.load)))
                }
            }
            _ => {
                same_ids = false;
                kept.push(false);
                let id = BackendId::new(row.id);
                let load = load_for(&id);
                Arc::new(row.backend(id, app_id(row.app), region(), load))
            }
        };
        live += usize::from(!b.deleted);
        backends.push(b);
    }
    same_ids &= j == old.len();

    let by_id = match prev {
        Some(p) if same_ids => Arc::clone(&p.by_id),
        _ => Arc::new(
            backends
                .iter()
                .enumerate()
                .map(|(i, b)| (b.id.clone(), i as u32))
                .collect(),
        ),
    };

    // Each app's backends, and whether all of them were kept. Neighbours
    // mostly share an app (and its `AppId`): looked up once per run.
    let mut groups: Vec<(AppId, Vec<u32>, bool)> = Vec::new();
    let mut group_of: FastMap<&str, usize> = FastMap::default();
    let mut last: Option<usize> = None;
    for (i, b) in backends.iter().enumerate() {
        let g = match last {
            Some(g) if groups[g].0 == b.app => g,
            _ => *group_of.entry(b.app.as_str()).or_insert_with(|| {
                groups.push((b.app.clone(), Vec::new(), true));
                groups.len() - 1
            }),
        };
        last = Some(g);
        groups[g].1.push(i as u32);
        groups[g].2 &= kept[i];
    }
    let apps = groups
        .into_iter()
        .map(|(app, all, all_kept)| {
            let view = match prev.and_then(|p| p.apps.get(&app).map(|v| (p, v))) {
                // The same backends at the same places: the same view.
                Some((_, v)) if all_kept && v.all == all => Arc::clone(v),
                // The same places, and only load fields changed.
                Some((p, v)) if v.all == all => match v.patched(&p.backends, &backends) {
                    Some(patched) => Arc::new(patched),
                    None => Arc::new(AppView::build(all, &backends)),
                },
                _ => Arc::new(AppView::build(all, &backends)),
            };
            (app, view)
        })
        .collect();

    Assembled {
        backends,
        by_id,
        apps,
        live,
    }
}

impl HotBackend {
    /// The scoring fields of `b`, at index `index` of its snapshot.
    fn of(b: &Backend, index: u32) -> Self {
        HotBackend {
            load: Arc::clone(&b.load),
            site_vec: b.site_vec,
            capacity: u64::from(b.soft_limit.max(1)) * u64::from(b.weight.max(1)),
            index,
            soft_limit: b.soft_limit,
            hard_limit: b.hard_limit,
            region_idx: b.region_idx,
            country: b.country,
        }
    }
}

/// The same unit vector, bit for bit.
fn same_vec(a: &[f64; 3], b: &[f64; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl AppView {
    /// The view of one app's backends (`all`: their indices in `backends`,
    /// ascending).
    fn build(all: Vec<u32>, backends: &[Arc<Backend>]) -> Self {
        let mut view = AppView {
            all,
            ..AppView::default()
        };
        let mut by_country: FastMap<CountryCode, Vec<u32>> = FastMap::default();
        let mut by_region: FastMap<u16, Vec<u32>> = FastMap::default();
        for &i in &view.all {
            let b = &backends[i as usize];
            if !b.statically_eligible() {
                continue;
            }
            view.candidates.push(i);
            let pos = view.hot.len() as u32;
            if let Some(c) = b.country {
                by_country.entry(c).or_default().push(pos);
            }
            by_region.entry(b.region_idx).or_default().push(pos);
            view.hot.push(HotBackend::of(b, i));
        }
        view.hot_by_country = Arc::new(by_country);
        view.hot_by_region = Arc::new(by_region);
        view.index_sites();
        view
    }

    /// This view (built over `old`) for `new`, whose backends of this app
    /// are at the same indices, when every one that differs from `old`'s
    /// differs only in fields that leave the candidates, their countries,
    /// regions and sites alone (a weight, a limit): the packed fields are
    /// copied and those entries rewritten, the country, region and site
    /// indices shared. `None` when one candidate comes or goes or moves.
    fn patched(&self, old: &[Arc<Backend>], new: &[Arc<Backend>]) -> Option<Self> {
        let mut edits = Vec::new();
        for &i in &self.all {
            let (o, n) = (&old[i as usize], &new[i as usize]);
            if Arc::ptr_eq(o, n) {
                continue;
            }
            if o.statically_eligible() != n.statically_eligible() {
                return None;
            }
            if !n.statically_eligible() {
                continue;
            }
            if o.country != n.country
                || o.region_idx != n.region_idx
                || !same_vec(&o.site_vec, &n.site_vec)
            {
                return None;
            }
            let pos = self.candidates.binary_search(&i).ok()?;
            edits.push((pos, HotBackend::of(n, i)));
        }
        let mut hot = self.hot.clone();
        for (pos, h) in edits {
            hot[pos] = h;
        }
        Some(AppView {
            all: self.all.clone(),
            candidates: self.candidates.clone(),
            hot,
            hot_by_country: Arc::clone(&self.hot_by_country),
            hot_by_region: Arc::clone(&self.hot_by_region),
            sites: Arc::clone(&self.sites),
        })
    }
}
