//! Fuzzes routing.db row validation, snapshot building, reload diffs and
//! the decisions made on the result, from rows built out of arbitrary bytes.
//!
//! The loader hands the core whatever SQLite stored, every cell of any type
//! (`Value`), so the rows here are too: each cell is NULL, an integer, a
//! real (NaN and infinities included), a blob, arbitrary text, or text from
//! a small per-column list of plausible and almost-plausible values (region
//! ids, country codes, addresses, WireGuard keys and CIDRs), so that whole
//! tables often validate and the code after validation is reached.
//!
//! Two tables are applied in turn to one `RoutingTable` (the second is
//! often an edit of the first), and then a few clients ask a `Router` for
//! backends. Checked besides "never panics": `check` and `apply` agree on
//! whether a table is valid; a refused table leaves the one in service
//! alone; a snapshot compared with itself shows no difference; a decision
//! only ever picks an eligible backend of the asked app that was not
//! excluded, and never above its hard limit.

#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use geoedge_geoip::{ContinentCode, CountryCode, GeoPoint, Location};
use geoedge_routing::raw::{
    AppRow, BackendRow, CountryRegionRow, RegionRow, SniRouteRow, Value, WgPeerRow,
};
use geoedge_routing::snapshot;
use geoedge_routing::{
    AppId, BackendId, BindingConfig, RawTable, RegionId, Rejected, Request, Router, RoutingTable,
    SnapshotDiff,
};
use libfuzzer_sys::fuzz_target;

const IDS: &[&str] = &["a", "b", "c", "api-1", " a ", "", "   "];
const APPS: &[&str] = &["default", "api", "web", " api "];
const REGIONS: &[&str] = &["eu", "us", "sa", "ap", "x", " eu ", "EU", "fra"];
const COUNTRIES: &[&str] = &["DE", "US", "br", "SG", "FR", "XX", "D", "DEU", " gb ", "12"];
const CONTINENTS: &[&str] = &["EU", "NA", "SA", "AS", "OC", "AF", "AN", "ZZ"];
const IPS: &[&str] = &[
    "10.0.0.1",
    "10.0.0.2",
    "[fd00::1]",
    "fd00::2",
    "::ffff:10.0.0.3",
    "300.1.1.1",
    "10.0.0.1:80",
    "[::1",
];
const NUMBERS: &[&str] = &[
    "0", "1", "-1", " 65535 ", "65536", "1e3", "16777216", "16777217", "NaN", "inf", "-0", "90",
    "-180.0", "+5", "9e15", "0x10",
];
const INTS: &[i64] = &[
    0,
    1,
    -1,
    2,
    10,
    65_535,
    65_536,
    1 << 24,
    (1 << 24) + 1,
    i64::MIN,
    i64::MAX,
];
const REALS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    0.5,
    90.0,
    -90.0,
    90.000_1,
    180.0,
    -180.0,
    180.000_1,
    50.11,
    8.68,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    9e15,
    1e300,
];
const KEYS: &[&str] = &[
    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
    "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
    "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
    "not a key",
];
const ENDPOINTS: &[&str] = &[
    "192.0.2.1:51820",
    "[2001:db8::1]:51820",
    "pop-1.example.com:51820",
    "host:0",
    "-bad-:1",
    ":1",
    "a..b:1",
    "192.0.2.1",
    "",
];
const NETS: &[&str] = &[
    "10.0.0.0/24",
    "10.0.0.1/32, fd00::/64",
    "10.0.0.5/24",
    "10.0.0.0/33",
    "10.0.0.1",
    " , ",
    "",
    "0.0.0.0/0,::/0",
];

/// Backend ids the clients exclude and bind to.
const BACKEND_IDS: &[&str] = &["a", "b", "c", "api-1"];
const HOSTS: &[&str] = &[
    "api.example.com",
    "*.example.com",
    "*.b.example.com",
    "API.example.com",
    "*",
    "a..b",
    " x.example.com ",
];

fn pick<T: Copy>(u: &mut Unstructured<'_>, from: &[T]) -> Result<T> {
    Ok(*u.choose(from)?)
}

/// One cell: any SQLite type, biased toward the column's own kind.
fn cell(u: &mut Unstructured<'_>, texts: &[&str]) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=15)? {
        0 => Value::Null,
        1 => Value::Integer(pick(u, INTS)?),
        2 => Value::Integer(u.arbitrary()?),
        3 => Value::Real(pick(u, REALS)?),
        4 => Value::Real(u.arbitrary()?),
        5 => Value::Text(u.arbitrary()?),
        6 => Value::Blob(u.arbitrary()?),
        7 => Value::Text(pick(u, NUMBERS)?.to_owned()),
        _ => Value::Text(pick(u, texts)?.to_owned()),
    })
}

/// A cell of a numeric column: mostly numbers, sometimes anything.
fn number(u: &mut Unstructured<'_>, small: &[i64]) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=7)? {
        0..=3 => Value::Integer(pick(u, small)?),
        4 => Value::Null,
        5 => Value::Integer(pick(u, INTS)?),
        _ => cell(u, NUMBERS)?,
    })
}

/// A latitude or longitude cell.
fn coordinate(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0u8..=5)? {
        0..=2 => Value::Real(pick(u, REALS)?),
        3 => Value::Integer(u.int_in_range(-200..=200)?),
        _ => cell(u, NUMBERS)?,
    })
}

fn backend(u: &mut Unstructured<'_>) -> Result<BackendRow> {
    let (lat, lon) = if u.ratio(1u8, 3)? {
        (coordinate(u)?, coordinate(u)?)
    } else {
        (Value::Null, Value::Null)
    };
    Ok(BackendRow {
        rowid: u.int_in_range(0..=64)?,
        id: cell(u, IDS)?,
        app: if u.ratio(1u8, 2)? {
            Value::Null
        } else {
            cell(u, APPS)?
        },
        region: cell(u, REGIONS)?,
        country: if u.ratio(1u8, 2)? {
            Value::Null
        } else {
            cell(u, COUNTRIES)?
        },
        latitude: lat,
        longitude: lon,
        wg_ip: cell(u, IPS)?,
        port: number(u, &[1, 80, 443, 8080, 65_535, 0, 65_536])?,
        healthy: number(u, &[1, 1, 0, 2])?,
        weight: number(u, &[1, 1, 2, 0, 100])?,
        soft_limit: number(u, &[0, 1, 2, 10, 100])?,
        hard_limit: number(u, &[0, 1, 2, 3, 10, 100])?,
        deleted: number(u, &[0, 0, 1, -1])?,
    })
}

fn region(u: &mut Unstructured<'_>) -> Result<RegionRow> {
    Ok(RegionRow {
        rowid: u.int_in_range(0..=64)?,
        id: cell(u, REGIONS)?,
        name: cell(u, REGIONS)?,
        latitude: coordinate(u)?,
        longitude: coordinate(u)?,
    })
}

fn country_region(u: &mut Unstructured<'_>) -> Result<CountryRegionRow> {
    Ok(CountryRegionRow {
        rowid: u.int_in_range(0..=64)?,
        country: cell(u, COUNTRIES)?,
        region: cell(u, REGIONS)?,
    })
}

fn wg_peer(u: &mut Unstructured<'_>) -> Result<WgPeerRow> {
    Ok(WgPeerRow {
        rowid: u.int_in_range(0..=64)?,
        public_key: cell(u, KEYS)?,
        endpoint: if u.ratio(1u8, 3)? {
            Value::Null
        } else {
            cell(u, ENDPOINTS)?
        },
        allowed_ips: cell(u, NETS)?,
        persistent_keepalive: number(u, &[0, 25, 65_535, 65_536, -1])?,
        region: if u.ratio(1u8, 2)? {
            Value::Null
        } else {
            cell(u, REGIONS)?
        },
    })
}

fn app_row(u: &mut Unstructured<'_>) -> Result<AppRow> {
    Ok(AppRow {
        rowid: u.arbitrary()?,
        app: cell(u, APPS)?,
        client_max_connections: number(u, &[0, 1, 10])?,
        client_rate: number(u, &[0, 1, 100])?,
        client_rate_period_seconds: number(u, &[0, 1, 60, 86_401])?,
    })
}

fn sni_route(u: &mut Unstructured<'_>) -> Result<SniRouteRow> {
    Ok(SniRouteRow {
        rowid: u.arbitrary()?,
        hostname: cell(u, HOSTS)?,
        app: cell(u, APPS)?,
    })
}

fn rows<T>(
    u: &mut Unstructured<'_>,
    max: usize,
    row: fn(&mut Unstructured<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| row(u)).collect()
}

fn table(u: &mut Unstructured<'_>) -> Result<RawTable> {
    Ok(RawTable {
        schema_version: match u.int_in_range(0u8..=7)? {
            0..=2 => 0,
            3..=5 => 1,
            6 => 2,
            _ => u.arbitrary()?,
        },
        backends: rows(u, 12, backend)?,
        regions: if u.ratio(1u8, 2)? {
            None
        } else {
            Some(rows(u, 6, region)?)
        },
        country_regions: if u.ratio(1u8, 2)? {
            None
        } else {
            Some(rows(u, 6, country_region)?)
        },
        wg_peers: if u.ratio(1u8, 3)? {
            rows(u, 3, wg_peer)?
        } else {
            Vec::new()
        },
        apps: rows(u, 3, app_row)?,
        sni_routes: rows(u, 4, sni_route)?,
    })
}

/// A reload after `old`: an edit of a few cells and rows, or a new table.
fn edit(u: &mut Unstructured<'_>, old: &RawTable) -> Result<RawTable> {
    if u.ratio(1u8, 4)? {
        return table(u);
    }
    let mut new = old.clone();
    for _ in 0..u.int_in_range(0..=4)? {
        match u.int_in_range(0u8..=6)? {
            0 if !new.backends.is_empty() => {
                let i = u.choose_index(new.backends.len())?;
                new.backends.remove(i);
            }
            1 => new.backends.push(backend(u)?),
            2 if !new.backends.is_empty() => {
                let i = u.choose_index(new.backends.len())?;
                let b = &mut new.backends[i];
                match u.int_in_range(0u8..=5)? {
                    0 => b.healthy = number(u, &[0, 1])?,
                    1 => b.deleted = number(u, &[0, 1])?,
                    2 => b.weight = number(u, &[0, 1, 2])?,
                    3 => b.region = cell(u, REGIONS)?,
                    4 => b.port = number(u, &[80, 81])?,
                    _ => b.hard_limit = number(u, &[0, 1, 5])?,
                }
            }
            3 => new.schema_version = u.int_in_range(0..=3)?,
            4 if !new.wg_peers.is_empty() => {
                new.wg_peers.pop();
            }
            4 => new.apps.push(app_row(u)?),
            5 if !new.sni_routes.is_empty() => {
                new.sni_routes.pop();
            }
            5 => new.sni_routes.push(sni_route(u)?),
            _ => new.wg_peers.push(wg_peer(u)?),
        }
    }
    Ok(new)
}

fn location(u: &mut Unstructured<'_>) -> Result<Option<Location>> {
    if u.ratio(1u8, 4)? {
        return Ok(None);
    }
    let country = CountryCode::parse(pick(u, COUNTRIES)?).ok();
    let continent = ContinentCode::parse(pick(u, CONTINENTS)?).ok();
    let point = if u.ratio(1u8, 2)? {
        GeoPoint::new(pick(u, REALS)?, pick(u, REALS)?)
    } else {
        GeoPoint::new(u.arbitrary()?, u.arbitrary()?)
    };
    Ok(Some(Location {
        country,
        continent,
        subdivision: None,
        point,
    }))
}

/// One base instant for the whole run: decisions take `now` as an argument.
#[allow(clippy::disallowed_methods)]
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let first = table(u)?;
    let second = edit(u, &first)?;
    let rt = Arc::new(RoutingTable::new());
    for (n, raw) in [&first, &second].into_iter().enumerate() {
        let errors = snapshot::check(raw);
        for e in &errors {
            let _ = e.to_string();
        }
        let before = rt.snapshot();
        let generation = rt.generation();
        match rt.apply(raw, n as u64 + 1) {
            Ok(applied) => {
                assert!(
                    errors.is_empty(),
                    "applied a table check refused: {errors:?}"
                );
                let _ = applied.diff.to_string();
                assert!(applied.generation >= generation);
            }
            Err(rejected) => {
                let _ = rejected.to_string();
                match &rejected {
                    Rejected::Invalid(invalid) => {
                        assert_eq!(invalid.errors, errors, "check and apply disagree");
                        assert!(!errors.is_empty());
                    }
                    Rejected::Emptied { .. } => assert!(errors.is_empty()),
                }
                assert!(
                    Arc::ptr_eq(&before, &rt.snapshot()),
                    "a refused table was swapped in"
                );
                assert_eq!(rt.generation(), generation);
            }
        }
        if let Ok(snap) = snapshot::build(raw, |_| Arc::default()) {
            assert!(SnapshotDiff::between(&snap, &snap).is_empty());
            let diff = SnapshotDiff::between(&before, &snap);
            let _ = diff.to_string();
        }
    }

    let local = RegionId::new(pick(u, REGIONS)?);
    let router = Router::new(
        Arc::clone(&rt),
        local,
        BindingConfig {
            ttl: Duration::from_secs(u.int_in_range(0..=600)?),
            max_entries: u.int_in_range(1..=64)?,
            ipv4_prefix: u.int_in_range(0..=32)?,
            ipv6_prefix: u.int_in_range(0..=128)?,
        },
    );
    let snap = rt.snapshot();
    let mut held = Vec::new();
    for step in 0..u.int_in_range(0..=16)? {
        let app = AppId::new(pick(u, APPS)?.trim());
        let ip: IpAddr = if u.ratio(1u8, 2)? {
            IpAddr::from([10, 1, 0, u.int_in_range(0..=3)?])
        } else {
            u.arbitrary()?
        };
        let location = location(u)?;
        let exclude: Vec<BackendId> = (0..u.int_in_range(0..=2)?)
            .map(|_| pick(u, BACKEND_IDS).map(BackendId::new))
            .collect::<Result<_>>()?;
        let req = Request {
            app: &app,
            ip,
            location: location.as_ref(),
            exclude: &exclude,
        };
        explain(&router, &req);
        let now = base() + Duration::from_secs(step * u.int_in_range(0..=120)?);
        match router.decide(&req, now) {
            Ok(route) => {
                let b = route.backend();
                assert_eq!(b.app, app, "routed to another app's backend");
                assert!(b.statically_eligible(), "routed to an ineligible backend");
                assert!(!exclude.contains(&b.id), "routed to an excluded backend");
                assert!(b.active() <= b.hard_limit, "over the hard limit");
                assert!(snap.backend(b.id.as_str()).is_some());
                if u.ratio(2u8, 3)? {
                    held.push(route);
                }
            }
            Err(no) => {
                let _ = no.to_string();
            }
        }
        if !held.is_empty() && u.ratio(1u8, 4)? {
            let i = u.choose_index(held.len())?;
            held.swap_remove(i);
        }
    }
    drop(held);
    for b in &snap.backends {
        assert_eq!(b.active(), 0, "a released slot was not given back");
    }
    Ok(())
}

/// Explains a request (no reservation, no binding) and checks the ranking
/// names only backends of the app.
fn explain(router: &Router, req: &Request<'_>) {
    let e = router.explain(req);
    let snap = router.table().snapshot();
    for c in &e.candidates {
        let b = snap
            .backend(c.id.as_str())
            .expect("a candidate of the table");
        assert_eq!(b.app, *req.app);
    }
    let _ = e.reason.len();
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
