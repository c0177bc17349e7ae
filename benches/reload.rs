//! What a reload of routing.db costs at 1k, 10k and 100k backends, phase by
//! phase:
//!
//! - `read/N`: reading the rows out of a routing.db file with the loader
//!   (one read transaction, every row: inherently proportional to the table);
//! - `first_load/N`: validating those rows and building a table from nothing
//!   ([`RoutingTable::from_raw`], what the first load does after the read);
//! - `one_row_full/N` and `one_row/N`: applying, to a table in service, a
//!   table that differs from it in one backend's weight, rebuilding every
//!   backend ([`RoutingTable::apply_full`], what every reload did before
//!   they reused the snapshot in service) and reusing the unchanged ones
//!   ([`RoutingTable::apply`]). Each iteration applies the other of two
//!   tables, so every one is a real change (a new generation); the drop of
//!   the replaced snapshot is included;
//! - `drain/N`: the same with `apply`, the one row's `healthy` going 1 → 0
//!   and back: the backend leaves its app's candidates, so that app's view
//!   is rebuilt (a weight change only rewrites its entry).
//!
//! `GEOEDGE_RELOAD_SIZES` (default `1000 10000 100000`) picks the sizes.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use geoedge_routing::raw::{BackendRow, RawTable, Value};
use geoedge_routing::{loader, RoutingTable};

mod common;

fn sizes() -> Vec<usize> {
    std::env::var("GEOEDGE_RELOAD_SIZES")
        .ok()
        .map(|s| {
            s.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000])
}

/// Writes `raw`'s regions, country map and backends into a new routing.db.
fn write_db(path: &Path, raw: &RawTable) {
    loader::init(path, false).unwrap();
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    let sql = |v: &Value| match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Integer(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    };
    for r in raw.regions.iter().flatten() {
        tx.execute(
            "INSERT INTO regions (id, name, latitude, longitude) VALUES (?1, ?2, ?3, ?4)",
            [
                sql(&r.id),
                sql(&r.name),
                sql(&r.latitude),
                sql(&r.longitude),
            ],
        )
        .unwrap();
    }
    for r in raw.country_regions.iter().flatten() {
        tx.execute(
            "INSERT INTO country_regions (country, region) VALUES (?1, ?2)",
            [sql(&r.country), sql(&r.region)],
        )
        .unwrap();
    }
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO backends (id, app, region, country, latitude, longitude, wg_ip, \
                 port, healthy, weight, soft_limit, hard_limit, deleted) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .unwrap();
        for r in &raw.backends {
            stmt.execute([
                sql(&r.id),
                sql(&r.app),
                sql(&r.region),
                sql(&r.country),
                sql(&r.latitude),
                sql(&r.longitude),
                sql(&r.wg_ip),
                sql(&r.port),
                sql(&r.healthy),
                sql(&r.weight),
                sql(&r.soft_limit),
                sql(&r.hard_limit),
                sql(&r.deleted),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A table of `n` backends shaped like `benches/large_tables/run.sh`'s: all
/// in region `eu` and country DE (no coordinates of their own), each on its
/// own address; the regions and country map are the other benches'.
fn large(n: usize) -> RawTable {
    let mut raw = common::table(0);
    raw.backends = (0..n)
        .map(|i| {
            let ip = format!("127.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
            let mut r = BackendRow::new(&format!("b{i:06}"), "eu", &ip, 9, 100, 200);
            r.rowid = i as i64 + 1;
            r.country = "DE".into();
            r
        })
        .collect();
    raw
}

/// The table of `n` backends and the same with the backend in the middle
/// changed: its weight 1 → 2, or (`drain`) its `healthy` 1 → 0.
fn pair(n: usize, drain: bool) -> [RawTable; 2] {
    let a = large(n);
    let mut b = a.clone();
    if drain {
        b.backends[n / 2].healthy = Value::Integer(0);
    } else {
        b.backends[n / 2].weight = Value::Integer(2);
    }
    [a, b]
}

fn reload(c: &mut Criterion) {
    for n in sizes() {
        let mut g = c.benchmark_group("reload");
        // A handful of samples at 100k: each takes a good part of a second.
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(if n >= 100_000 { 8 } else { 3 }));
        let raws = pair(n, false);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routing.db");
        write_db(&path, &raws[0]);
        assert_eq!(loader::load(&path).unwrap().backends.len(), n);
        let conn = loader::open(&path).unwrap();
        g.bench_function(BenchmarkId::new("read", n), |b| {
            b.iter(|| loader::read(&conn, &path).unwrap())
        });

        g.bench_function(BenchmarkId::new("first_load", n), |b| {
            b.iter(|| RoutingTable::from_raw(&raws[0], 0).unwrap())
        });

        let drains = pair(n, true);
        for (name, full, raws) in [
            ("one_row_full", true, &raws),
            ("one_row", false, &raws),
            ("drain", false, &drains),
        ] {
            let table = RoutingTable::from_raw(&raws[0], 0).unwrap();
            let mut k = 0usize;
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    k += 1;
                    let raw = &raws[k % 2];
                    let applied = if full {
                        table.apply_full(raw, 0)
                    } else {
                        table.apply(raw, 0)
                    }
                    .unwrap();
                    assert_eq!(applied.diff.changed.len(), 1);
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, reload);
criterion_main!(benches);
