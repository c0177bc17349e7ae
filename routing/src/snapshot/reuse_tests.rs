//! [`rebuild`] against [`build`]: a snapshot built by keeping what the
//! previous one has right equals one built from nothing, field by field,
//! counters included; and what it keeps, it shares. The comparison and the
//! table generators are the crate's, for the routing table's own property
//! test too.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::raw::{AppRow, BackendRow, RawTable, RegionRow, SniRouteRow, Value};
use crate::testutil::{backend, table};

fn bits(v: &[f64; 3]) -> [u64; 3] {
    v.map(f64::to_bits)
}

fn point_bits(p: GeoPoint) -> (u64, u64) {
    (p.latitude.to_bits(), p.longitude.to_bits())
}

/// Panics unless `a` and `b` have the same contents: every backend field
/// (bit for bit), the indices, the app views with their packed candidates
/// and site groups, regions, country map and peers. `same_load` says
/// whether two backends' counters are the same ones.
pub(crate) fn assert_same(
    a: &Snapshot,
    b: &Snapshot,
    same_load: impl Fn(&Arc<BackendLoad>, &Arc<BackendLoad>) -> bool,
) {
    assert_eq!(a.schema_version, b.schema_version);
    assert_eq!(a.backends.len(), b.backends.len());
    for (x, y) in a.backends.iter().zip(&b.backends) {
        assert!(x.same_config(y), "{x:?} != {y:?}");
        assert_eq!(x.region_idx, y.region_idx, "{}", x.id);
        assert_eq!(point_bits(x.site), point_bits(y.site), "{}", x.id);
        assert_eq!(bits(&x.site_vec), bits(&y.site_vec), "{}", x.id);
        assert!(same_load(&x.load, &y.load), "counters of {}", x.id);
    }
    assert_eq!(*a.by_id, *b.by_id);
    assert_eq!(a.live, b.live);
    assert_eq!(a.live, a.backends.iter().filter(|b| !b.deleted).count());
    assert_eq!(a.apps(), b.apps());
    for (app, x) in &a.apps {
        let y = &b.apps[app];
        assert_eq!(x.all, y.all, "{app}");
        assert_eq!(x.candidates, y.candidates, "{app}");
        assert_eq!(x.hot.len(), y.hot.len(), "{app}");
        for (h, k) in x.hot.iter().zip(&y.hot) {
            assert!(same_load(&h.load, &k.load));
            assert_eq!(bits(&h.site_vec), bits(&k.site_vec));
            assert_eq!(
                (h.capacity, h.index, h.soft_limit, h.hard_limit),
                (k.capacity, k.index, k.soft_limit, k.hard_limit)
            );
            assert_eq!((h.region_idx, h.country), (k.region_idx, k.country));
        }
        assert_eq!(x.hot_by_country, y.hot_by_country, "{app}");
        assert_eq!(x.hot_by_region, y.hot_by_region, "{app}");
        assert_eq!(x.sites.len(), y.sites.len(), "{app}");
        for (g, h) in x.sites.iter().zip(y.sites.iter()) {
            assert_eq!(g.members, h.members);
            assert_eq!(bits(&g.center), bits(&h.center));
            assert_eq!(g.cos_radius.to_bits(), h.cos_radius.to_bits());
            assert_eq!(g.sin_radius.to_bits(), h.sin_radius.to_bits());
        }
    }
    assert_eq!(a.regions, b.regions);
    assert_eq!(a.region_index, b.region_index);
    assert_eq!(a.country_map, b.country_map);
    assert_eq!(
        (a.builtin_regions, a.builtin_countries),
        (b.builtin_regions, b.builtin_countries)
    );
    assert_eq!(a.wg_peers, b.wg_peers);
    assert_eq!(*a.app_limits, *b.app_limits);
    assert_eq!(*a.sni_routes, *b.sni_routes);
}

/// One backend row drawn from small sets, so that edits collide: 40 ids, three apps, four regions (now and then `af`, which only one
/// [`regions`] variant has), coordinates that are NULL, `0.0` or `-0.0`, and
/// rarely (one row in 40) an invalid cell.
pub(crate) fn arb_row() -> impl Strategy<Value = BackendRow> {
    (
        (0..40u8, 0..3u8, 0..30u8, 0..5u8, 0..5u8),
        (0..4u8, 0..2u8, 0..3u8, 0..4u8, 0..3u8, 0..3u8, 0..40u8),
    )
        .prop_map(
            |(
                (id, app, region, country, coords),
                (ip, port, healthy, weight, limits, deleted, broken),
            )| {
                let region = ["eu", "us", "sa", "ap", "af"]
                    .get(region as usize)
                    .copied()
                    .unwrap_or(["eu", "us"][region as usize % 2]);
                let mut r = backend(&format!("b{id:02}"), region, None, 1, 2);
                r.app = [Value::Null, "default".into(), " api ".into()][app as usize].clone();
                r.country = [
                    Value::Null,
                    "DE".into(),
                    "us".into(),
                    "BR".into(),
                    Value::Null,
                ][country as usize]
                    .clone();
                let (lat, lon): (Value, Value) = match coords {
                    0 | 1 => (Value::Null, Value::Null),
                    2 => (0.0.into(), 0.0.into()),
                    3 => ((-0.0).into(), 0.0.into()),
                    _ => (48.8.into(), 2.35.into()),
                };
                (r.latitude, r.longitude) = (lat, lon);
                r.wg_ip = ["10.0.0.1", "10.0.0.2", "[fdaa::1]", " 10.0.0.1"][ip as usize].into();
                r.port = [8080i64, 8081][port as usize].into();
                r.healthy = [Value::Null, 0.into(), 1.into()][healthy as usize].clone();
                r.weight = [Value::Null, 0.into(), 1.into(), 3.into()][weight as usize].clone();
                let (soft, hard) = [(1, 2), (5, 5), (0, 9)][limits as usize];
                (r.soft_limit, r.hard_limit) = (soft.into(), hard.into());
                r.deleted = [Value::Null, 0.into(), 1.into()][deleted as usize].clone();
                match broken {
                    0 => r.region = "mars".into(),
                    1 => r.country = "GBR".into(),
                    2 => r.longitude = Value::Null,
                    3 => (r.soft_limit, r.hard_limit) = (3.into(), 1.into()),
                    _ => {}
                }
                r
            },
        )
}

/// The regions of a table: 0 the test regions, 1 the same and `af` (which
/// sorts first, so every region's index moves), 2 the test regions with
/// `eu` moved, 3 none (the built-in regions and country map).
pub(crate) fn regions(rows: Vec<BackendRow>, variant: u8) -> RawTable {
    let mut raw = table(rows);
    match variant {
        1 => raw.regions.as_mut().unwrap().push(RegionRow {
            rowid: 9,
            id: "af".into(),
            name: Value::Null,
            latitude: (-1.29).into(),
            longitude: 36.82.into(),
        }),
        2 => raw.regions.as_mut().unwrap()[0].latitude = 52.52.into(),
        3 => {
            raw.regions = None;
            raw.country_regions = None;
        }
        _ => {}
    }
    raw
}

/// The `apps` rows of a table: 0 none, 1 one app, 2 that app changed and
/// another added, 3 an invalid row.
pub(crate) fn app_rows(variant: u8) -> Vec<AppRow> {
    let row = |rowid, app: &str, max: Value, rate: Value, period: Value| AppRow {
        rowid,
        app: app.into(),
        client_max_connections: max,
        client_rate: rate,
        client_rate_period_seconds: period,
    };
    match variant {
        1 => vec![row(1, "api", 5.into(), Value::Null, Value::Null)],
        2 => vec![
            row(1, "api", 6.into(), Value::Null, Value::Null),
            row(2, "web", Value::Null, 10.into(), 1.into()),
        ],
        3 => vec![row(1, "api", (-1).into(), Value::Null, Value::Null)],
        _ => Vec::new(),
    }
}

/// The `sni_routes` rows of a table: 0 none, 1 a wildcard to `default`
/// (unknown when no backend has that app), 2 that and an exact name to
/// `api` (an app of the backends, or of [`app_rows`]), 3 an invalid row.
pub(crate) fn sni_rows(variant: u8) -> Vec<SniRouteRow> {
    let row = |rowid, host: &str, app: &str| SniRouteRow {
        rowid,
        hostname: host.into(),
        app: app.into(),
    };
    match variant {
        1 => vec![row(1, "*.example.com", "default")],
        2 => vec![
            row(1, "*.example.com", "default"),
            row(2, "api.example.com", "api"),
        ],
        3 => vec![row(1, "API.example.com", "default")],
        _ => Vec::new(),
    }
}

/// One edit of a table.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    /// Replaces the row at this index (modulo the count), keeping its id
    /// when the flag is set.
    Set(usize, BackendRow, bool),
    /// Sets one cell (column by number, `id` excepted) of the row at this
    /// index (modulo the count) to that of the given row: an `UPDATE`.
    Cell(usize, u8, BackendRow),
    /// Removes the row at this index (modulo the count).
    Remove(usize),
    /// Adds a row.
    Add(BackendRow),
    /// Takes the regions of this variant (see [`regions`]).
    Regions(u8),
    /// Takes the `apps` rows of this variant (see [`app_rows`]).
    Apps(u8),
    /// Takes the `sni_routes` rows of this variant (see [`sni_rows`]).
    Sni(u8),
}

pub(crate) fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => (any::<usize>(), arb_row(), 0..4u8).prop_map(|(i, r, k)| Edit::Set(i, r, k > 0)),
        6 => (any::<usize>(), 0..12u8, arb_row()).prop_map(|(i, c, r)| Edit::Cell(i, c, r)),
        2 => any::<usize>().prop_map(Edit::Remove),
        2 => arb_row().prop_map(Edit::Add),
        1 => (0..4u8).prop_map(Edit::Regions),
        1 => (0..4u8).prop_map(Edit::Apps),
        1 => (0..4u8).prop_map(Edit::Sni),
    ]
}

/// A table as rows and a regions variant, edited in place.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub rows: Vec<BackendRow>,
    pub regions: u8,
    pub apps: u8,
    pub sni: u8,
}

impl Spec {
    pub fn apply(&mut self, edit: &Edit) {
        let n = self.rows.len();
        match edit {
            Edit::Set(i, r, keep_id) if n > 0 => {
                let id = self.rows[i % n].id.clone();
                self.rows[i % n] = r.clone();
                if *keep_id {
                    self.rows[i % n].id = id;
                }
            }
            Edit::Cell(i, c, from) if n > 0 => {
                let r = &mut self.rows[i % n];
                match c {
                    0 => r.app = from.app.clone(),
                    1 => r.region = from.region.clone(),
                    2 => r.country = from.country.clone(),
                    3 => r.latitude = from.latitude.clone(),
                    4 => r.longitude = from.longitude.clone(),
                    5 => r.wg_ip = from.wg_ip.clone(),
                    6 => r.port = from.port.clone(),
                    7 => r.healthy = from.healthy.clone(),
                    8 => r.weight = from.weight.clone(),
                    9 => r.soft_limit = from.soft_limit.clone(),
                    10 => r.hard_limit = from.hard_limit.clone(),
                    _ => r.deleted = from.deleted.clone(),
                }
            }
            Edit::Remove(i) if n > 0 => {
                self.rows.remove(i % n);
            }
            Edit::Set(_, r, _) | Edit::Add(r) => self.rows.push(r.clone()),
            Edit::Cell(..) | Edit::Remove(_) => {}
            Edit::Regions(v) => self.regions = *v,
            Edit::Apps(v) => self.apps = *v,
            Edit::Sni(v) => self.sni = *v,
        }
    }

    pub fn raw(&self) -> RawTable {
        let rows = (self.rows.iter().cloned().enumerate())
            .map(|(i, mut r)| {
                r.rowid = i as i64 + 1;
                r
            })
            .collect();
        let mut raw = regions(rows, self.regions);
        raw.apps = app_rows(self.apps);
        raw.sni_routes = sni_rows(self.sni);
        raw
    }
}

pub(crate) fn arb_spec() -> impl Strategy<Value = Spec> {
    (proptest::collection::vec(arb_row(), 0..12), 0..4u8).prop_map(|(mut rows, regions)| {
        // Distinct ids to start with (edits may still add a duplicate).
        let mut seen = std::collections::HashSet::new();
        rows.retain(|r| seen.insert(format!("{:?}", r.id)));
        Spec {
            rows,
            regions,
            apps: 0,
            sni: 0,
        }
    })
}

/// Counters by id, as the routing table keeps them, counting the asks.
#[derive(Default)]
struct Loads {
    map: HashMap<BackendId, Arc<BackendLoad>>,
    asked: usize,
}

impl Loads {
    fn get(&mut self, id: &BackendId) -> Arc<BackendLoad> {
        self.asked += 1;
        Arc::clone(self.map.entry(id.clone()).or_default())
    }
}

proptest! {
    /// Through random edits of random tables, the incremental build gives
    /// exactly the snapshot of a full one (the same counters included),
    /// refuses exactly what it refuses, and asks for counters only for ids
    /// the previous snapshot lacked.
    #[test]
    fn rebuild_equals_a_full_build(mut spec in arb_spec(), steps in proptest::collection::vec(proptest::collection::vec(arb_edit(), 1..4), 1..8)) {
        let mut loads = Loads::default();
        let mut prev = build(&table(vec![]), |id| loads.get(id)).unwrap();
        for edits in std::iter::once(Vec::new()).chain(steps) {
            for e in &edits {
                spec.apply(e);
            }
            let raw = spec.raw();
            let full = build(&raw, |id| loads.get(id));
            loads.asked = 0;
            let inc = rebuild(&raw, &prev, |id| loads.get(id));
            match (full, inc) {
                (Err(f), Err(i)) => {
                    prop_assert_eq!(f, i);
                    prop_assert_eq!(loads.asked, 0);
                }
                (Ok(f), Ok(i)) => {
                    assert_same(&f, &i, Arc::ptr_eq);
                    let new_ids = i.backends.iter().filter(|b| prev.backend(b.id.as_str()).is_none()).count();
                    prop_assert_eq!(loads.asked, new_ids);
                    // What is unchanged is kept, not rebuilt.
                    for b in &i.backends {
                        if let Some(p) = prev.backend(b.id.as_str()) {
                            let row_same = p.same_config(b) && p.region_idx == b.region_idx
                                && point_bits(p.site) == point_bits(b.site);
                            prop_assert_eq!(Arc::ptr_eq(p, b), row_same, "{}", b.id);
                        }
                    }
                    // So are the apps and server name routes.
                    let same = *prev.app_limits == *i.app_limits;
                    prop_assert_eq!(Arc::ptr_eq(&prev.app_limits, &i.app_limits), same);
                    let same = *prev.sni_routes == *i.sni_routes;
                    prop_assert_eq!(Arc::ptr_eq(&prev.sni_routes, &i.sni_routes), same);
                    prev = i;
                }
                (f, i) => prop_assert!(false, "full {:?}, incremental {:?}", f.err(), i.err()),
            }
        }
    }
}

fn rows(n: usize) -> Vec<BackendRow> {
    (0..n)
        .map(|i| {
            let mut r = backend(&format!("b{i:03}"), ["eu", "us"][i % 2], Some("DE"), 5, 9);
            r.app = ["default", "api", "web"][i % 3].into();
            r
        })
        .collect()
}

#[test]
fn an_edit_of_one_row_keeps_the_rest_of_the_snapshot() {
    let mut asked = 0;
    let prev = build(&table(rows(30)), |_| Arc::default()).unwrap();
    let mut edited = rows(30);
    // b004 is of app `api`.
    edited[4].weight = 7.into();
    let next = rebuild(&table(edited), &prev, |_| {
        asked += 1;
        Arc::default()
    })
    .unwrap();
    assert_eq!(asked, 0, "no counters asked for: every id stays");
    for (p, n) in prev.backends.iter().zip(&next.backends) {
        if n.id.as_str() == "b004" {
            assert!(!Arc::ptr_eq(p, n));
            assert_eq!(n.weight, 7);
            assert!(Arc::ptr_eq(&p.load, &n.load), "the counters carry");
        } else {
            assert!(Arc::ptr_eq(p, n), "{} kept", n.id);
        }
    }
    assert!(
        Arc::ptr_eq(&prev.by_id, &next.by_id),
        "the same ids: one index"
    );
    for app in ["default", "web"] {
        assert!(
            Arc::ptr_eq(&prev.apps[app], &next.apps[app]),
            "{app} untouched"
        );
    }
    // `api`'s view: its one changed entry rewritten, its indices shared.
    let (p, n) = (&prev.apps["api"], &next.apps["api"]);
    assert!(!Arc::ptr_eq(p, n));
    assert!(Arc::ptr_eq(&p.hot_by_country, &n.hot_by_country));
    assert!(Arc::ptr_eq(&p.hot_by_region, &n.hot_by_region));
    assert!(Arc::ptr_eq(&p.sites, &n.sites));
    let pos = n.candidates.iter().position(|&i| i == 4).unwrap();
    assert_eq!(n.hot[pos].capacity, 5 * 7);
    // A backend taken out of service moves the candidates: rebuilt.
    let mut drained = rows(30);
    drained[4].weight = 0.into();
    let out = rebuild(&table(drained), &prev, |_| Arc::default()).unwrap();
    assert!(!Arc::ptr_eq(&p.sites, &out.apps["api"].sites));
    assert_eq!(out.apps["api"].candidates.len(), p.candidates.len() - 1);

    // An added backend: counters asked for it alone, and a new index.
    let mut more = rows(31);
    more[4].weight = 7.into();
    let mut asked = Vec::new();
    let again = rebuild(&table(more), &next, |id| {
        asked.push(id.to_string());
        Arc::default()
    })
    .unwrap();
    assert_eq!(asked, ["b030"]);
    assert!(!Arc::ptr_eq(&next.by_id, &again.by_id));
    assert_eq!(again.backend("b030").map(|b| b.id.as_str()), Some("b030"));
}

#[test]
fn a_region_that_moves_every_index_rebuilds_every_backend() {
    let prev = build(&regions(rows(6), 0), |_| Arc::default()).unwrap();
    // `af` sorts first: every backend's region index moves.
    let next = rebuild(&regions(rows(6), 1), &prev, |_| Arc::default()).unwrap();
    for (p, n) in prev.backends.iter().zip(&next.backends) {
        assert!(!Arc::ptr_eq(p, n));
        assert_eq!(n.region_idx, p.region_idx + 1);
        assert!(Arc::ptr_eq(&p.load, &n.load));
    }
    assert_same(
        &next,
        &build(&regions(rows(6), 1), |_| Arc::default()).unwrap(),
        |_, _| true,
    );
}
