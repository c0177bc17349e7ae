//! The per-connection decision path: GeoIP lookup, binding check, scoring,
//! reservation and binding insert, over 10, 100 and 1,000 backends, on the
//! real GeoLite2-City database; and each step alone.
//!
//! Client addresses: `fresh_client` draws from a working set of 65,536
//! random public IPv4 addresses (a busy POP's client population) with a
//! binding table of 4,096 entries, so every decision misses the binding
//! table, scores every backend, and inserts a binding (evicting a
//! probationary one, a client seen once): the full path at steady state. `returning_client`
//! cycles over 1,024 addresses that stay bound. `steps/geoip_lookup_uniform`
//! looks up uniformly random addresses over the whole IPv4 space, the
//! cold-cache worst case of the 56 MB search tree.
//!
//! `metrics/…` runs, side by side (interleaved in blocks of 1,000 calls, so
//! that load from other processes falls on both), the proxy's per-connection work around
//! the decision (everything but the IO) as it was before the metrics and as
//! it is with them. Both read the clock for the decision, look the client
//! up in the live GeoIP holder and decide. "Off" then reads the clock again
//! to arm the connect timeout (what `tokio::time::timeout` does); "on" arms
//! it from the decision's reading and instead reads the clock once the
//! connect is done, records the duration in the backend's histogram, and
//! counts the connection's outcome with the proxy's own counter type. The
//! counters the cores always keep (GeoIP lookups, decisions by tier,
//! bindings) are in both.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geoedge_geoip::{GeoDb, GeoIp};
use geoedge_routing::{AppId, BindingConfig, RegionId, Request, Router, RoutingTable};

mod common;

// The proxy's connection counters, from the library as the proxy has them.
use geoedge::data::conn_stats::{ConnResult, ConnStats};

const WORKING_SET: usize = 1 << 16;

/// One connection's decision, as the proxy makes it: look the client up,
/// decide, and (by dropping the route) release the reservation.
fn connect(db: &GeoDb, router: &Router, app: &AppId, ip: IpAddr, now: Instant) -> bool {
    let lookup = db.lookup(ip);
    let route = router.decide(
        &Request {
            app,
            ip,
            location: lookup.location(),
            exclude: &[],
        },
        now,
    );
    route.is_ok()
}

/// The connect timeout the deadlines are armed with.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Metrics off: the decision, then the connect timeout armed the way
/// `tokio::time::timeout` arms it (a clock read).
fn connect_plain(geo: &GeoIp, router: &Router, app: &AppId, ip: IpAddr) -> bool {
    let started = Instant::now();
    let lookup = geo.lookup(ip);
    let route = router.decide(
        &Request {
            app,
            ip,
            location: lookup.location(),
            exclude: &[],
        },
        started,
    );
    std::hint::black_box(Instant::now() + CONNECT_TIMEOUT);
    route.is_ok()
}

/// Metrics on: the decision, the timeout armed from the decision's clock
/// read, the connect timed into the backend's histogram, the outcome
/// counted.
fn connect_metered(
    geo: &GeoIp,
    router: &Router,
    app: &AppId,
    ip: IpAddr,
    conns: &ConnStats,
) -> bool {
    let started = Instant::now();
    let lookup = geo.lookup(ip);
    let route = router.decide(
        &Request {
            app,
            ip,
            location: lookup.location(),
            exclude: &[],
        },
        started,
    );
    std::hint::black_box(started + CONNECT_TIMEOUT);
    match route {
        Ok(route) => {
            // (The connect itself would be here.)
            route
                .backend()
                .load
                .connect_stats()
                .observe(started.elapsed());
            // `ok` is read from the connects observed (see `ConnStats`).
            true
        }
        Err(_) => {
            conns.record(ConnResult::NoBackend);
            false
        }
    }
}

/// Runs `iters` calls of each side in alternating blocks of 1,000, the
/// order of the two flipping every round, and returns the time each side
/// took: load from other processes on a shared machine, and caches warmed
/// by the other side, fall on both alike.
fn alternate(
    iters: u64,
    mut off: impl FnMut() -> bool,
    mut on: impl FnMut() -> bool,
) -> (Duration, Duration) {
    let (mut t_off, mut t_on) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    let mut round = 0u64;
    while left > 0 {
        let k = left.min(1000);
        for side in [round & 1, !round & 1] {
            let t = Instant::now();
            if side == 0 {
                for _ in 0..k {
                    std::hint::black_box(off());
                }
                t_off += t.elapsed();
            } else {
                for _ in 0..k {
                    std::hint::black_box(on());
                }
                t_on += t.elapsed();
            }
        }
        left -= k;
        round += 1;
    }
    (t_off, t_on)
}

/// Rounds of the paired measurement, and calls per side in each.
const PAIRED_ROUNDS: usize = 41;
const PAIRED_CALLS: u64 = 20_000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Metrics off and on, side by side: each benchmark of a pair runs both
/// sides interleaved and reports its own.
fn metrics_cost(c: &mut Criterion) {
    // One database for both sides, so they share its caches (each has its
    // own routing table and bindings).
    let (db, db_name) = common::city_db();
    let geo = GeoIp::with_db(db);
    let app = AppId::default_app();
    let working_set: Vec<_> = common::Addresses::new().take(WORKING_SET).collect();
    let conns = ConnStats::default();
    let mut group = c.benchmark_group(format!("metrics/{db_name}"));
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 100, 1000] {
        let table = Arc::new(RoutingTable::from_raw(&common::table(n), 0).unwrap());
        let router = |max_entries| {
            Router::new(
                Arc::clone(&table),
                RegionId::new("eu"),
                BindingConfig {
                    max_entries,
                    ..BindingConfig::default()
                },
            )
        };
        // Fresh clients: a binding table of 4,096 over 65,536 addresses;
        // returning ones: 1,024 addresses that stay bound.
        for (kind, max_entries, mask) in [
            ("fresh_client", 4096, WORKING_SET - 1),
            (
                "returning_client",
                BindingConfig::default().max_entries,
                1023,
            ),
        ] {
            let (off, on) = (router(max_entries), router(max_entries));
            let (mut i, mut j) = (0usize, 0usize);
            let mut pair = |iters| {
                alternate(
                    iters,
                    || {
                        i = (i + 1) & mask;
                        connect_plain(&geo, &off, &app, working_set[i])
                    },
                    || {
                        j = (j + 1) & mask;
                        connect_metered(&geo, &on, &app, working_set[j], &conns)
                    },
                )
            };
            group.bench_function(BenchmarkId::new(format!("{kind}_off"), n), |b| {
                b.iter_custom(|iters| pair(iters).0)
            });
            group.bench_function(BenchmarkId::new(format!("{kind}_on"), n), |b| {
                b.iter_custom(|iters| pair(iters).1)
            });
            // The two benchmarks above still ran at different times; the
            // ratio is taken within rounds that measure both sides at once.
            let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..PAIRED_ROUNDS {
                let (off, on) = pair(PAIRED_CALLS);
                offs.push(off.as_nanos() as f64 / PAIRED_CALLS as f64);
                ons.push(on.as_nanos() as f64 / PAIRED_CALLS as f64);
                ratios.push(on.as_secs_f64() / off.as_secs_f64());
            }
            println!(
                "metrics/{db_name}/{kind}/{n}: paired medians over {PAIRED_ROUNDS} rounds: off {:.1} ns, on {:.1} ns, on/off {:.3}",
                median(&mut offs),
                median(&mut ons),
                median(&mut ratios)
            );
        }
    }
    group.finish();

    // The recording alone, on one hot backend.
    let table = RoutingTable::from_raw(&common::table(10), 0).unwrap();
    let backend = std::sync::Arc::clone(&table.snapshot().backends[0]);
    let mut steps = c.benchmark_group(format!("metrics_steps/{db_name}"));
    let started = Instant::now();
    steps.bench_function("clock_read_and_elapsed", |b| {
        b.iter(|| std::hint::black_box(started.elapsed()))
    });
    steps.bench_function("histogram_observe", |b| {
        b.iter(|| {
            backend
                .load
                .connect_stats()
                .observe(std::hint::black_box(Duration::from_micros(180)))
        })
    });
    steps.bench_function("outcome_count", |b| {
        b.iter(|| conns.record(std::hint::black_box(ConnResult::NoBackend)))
    });
    steps.finish();
}

fn decision(c: &mut Criterion) {
    let (db, db_name) = common::city_db();
    let app = AppId::default_app();
    let working_set: Vec<_> = common::Addresses::new().take(WORKING_SET).collect();
    let now = Instant::now();
    let mut group = c.benchmark_group(format!("decision/{db_name}"));
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 100, 1000] {
        let table = Arc::new(RoutingTable::from_raw(&common::table(n), 0).unwrap());
        let fresh = Router::new(
            Arc::clone(&table),
            RegionId::new("eu"),
            BindingConfig {
                max_entries: 4096,
                ..BindingConfig::default()
            },
        );
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("fresh_client", n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & (WORKING_SET - 1);
                std::hint::black_box(connect(&db, &fresh, &app, working_set[i], now))
            })
        });
        let returning = Router::new(table, RegionId::new("eu"), BindingConfig::default());
        let mut j = 0usize;
        group.bench_with_input(BenchmarkId::new("returning_client", n), &n, |b, _| {
            b.iter(|| {
                j = (j + 1) & 1023;
                std::hint::black_box(connect(&db, &returning, &app, working_set[j], now))
            })
        });
    }
    group.finish();

    let mut steps = c.benchmark_group(format!("steps/{db_name}"));
    let mut k = 0usize;
    steps.bench_function("geoip_lookup_working_set", |b| {
        b.iter(|| {
            k = (k + 1) & (WORKING_SET - 1);
            std::hint::black_box(db.lookup(working_set[k]))
        })
    });
    let mut uniform = common::Addresses::new().skip(WORKING_SET);
    steps.bench_function("geoip_lookup_uniform", |b| {
        b.iter(|| std::hint::black_box(db.lookup(uniform.next().unwrap())))
    });
    // The routing core alone: a located client, no GeoIP.
    let london = db.lookup("81.2.69.160".parse().unwrap());
    for n in [10usize, 100, 1000] {
        let table = Arc::new(RoutingTable::from_raw(&common::table(n), 0).unwrap());
        let router = Router::new(
            table,
            RegionId::new("eu"),
            BindingConfig {
                max_entries: 4096,
                ..BindingConfig::default()
            },
        );
        let mut m = 0usize;
        steps.bench_with_input(BenchmarkId::new("route_fresh_no_geoip", n), &n, |b, _| {
            b.iter(|| {
                m = (m + 1) & (WORKING_SET - 1);
                let route = router.decide(
                    &Request {
                        app: &app,
                        ip: working_set[m],
                        location: london.location(),
                        exclude: &[],
                    },
                    now,
                );
                std::hint::black_box(route.is_ok())
            })
        });
    }
    steps.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decision, metrics_cost
}
criterion_main!(benches);
