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
//!
//! `client_limit/…` is what the proxy's `limit_client` stage does per
//! connection, before any dial: take the routing snapshot, look up the
//! app's `apps` row (none here, so the settings hold), and
//! [`PerClient::admit`] the client under `--client-max-connections 100`
//! and `--client-rate 1000/60s`, boxing the guard; the guard is dropped
//! at once (the connection's close). `returning_client` is one client
//! connecting again and again, `working_set` cycles over the 65,536
//! addresses of the decision benches in a table of the default size
//! (100,000 clients, so every client stays held), and `limits_off` is the
//! stage with no limit set. The clock the stage reads is replaced by an
//! instant that moves on 100 ms (one client) or 10 µs (the working set)
//! per connection, so that the rate never refuses (a refusal is cheaper:
//! nothing is counted). `client_limit/paired/…` runs a whole
//! decision (`connect_plain`, GeoIP included) and the same decision
//! followed by the stage, alternating in blocks of 1,000 like `metrics/…`,
//! and prints the paired medians and their ratio.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geoedge_geoip::{GeoDb, GeoIp};
use geoedge_routing::{AppId, BindingConfig, RegionId, Request, Router, RoutingTable};

mod common;

// The proxy's connection counters, from the library as the proxy has them.
use geoedge::data::conn_stats::{ConnResult, ConnStats};
// The per-client table and the settings it reads, as the proxy has them.
use geoedge::data::per_client::PerClient;
use geoedge::data::proxy::ProxyOptions;

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

/// Settings with the per-client limits of the benchmark on: at most 100
/// open connections and 1,000 new ones per 60 s per client.
fn limit_options(on: bool) -> ProxyOptions {
    ProxyOptions {
        proxy_protocol_from: Vec::new(),
        send_proxy_protocol: None,
        connect_timeout: CONNECT_TIMEOUT,
        connect_attempts: 3,
        idle_timeout: Duration::from_secs(300),
        half_close: true,
        splice: true,
        proxy_header_timeout: Duration::from_secs(10),
        client_max_connections: on.then_some(100),
        client_rate: on.then(|| "1000/60s".parse().unwrap()),
        client_limit_exempt: Vec::new(),
        client_ipv4_prefix: 32,
        client_ipv6_prefix: 64,
    }
}

/// The `limit_client` stage: the snapshot's `apps` row for the app, the
/// shortcut when no limit is set, else the admission and the boxed guard
/// (dropped here, as the connection's close would).
fn limit_client(
    table: &RoutingTable,
    clients: &PerClient,
    options: &ProxyOptions,
    app: &AppId,
    ip: IpAddr,
    now: Instant,
) -> bool {
    let policy = options.client_policy();
    let snapshot = table.snapshot_guard();
    match clients.admit(&policy, app, snapshot.app_limits(app.as_str()), ip, now) {
        Ok(guard) => {
            let guard = guard.map(Box::new);
            std::hint::black_box(&guard);
            drop(guard);
            true
        }
        Err(_) => false,
    }
}

/// The default `--client-table-size`.
const CLIENT_TABLE_SIZE: usize = 100_000;

/// The per-client limit stage alone, and a whole decision with and without
/// it, side by side.
fn client_limit(c: &mut Criterion) {
    let (db, db_name) = common::city_db();
    let geo = GeoIp::with_db(db);
    let app = AppId::default_app();
    let working_set: Vec<_> = common::Addresses::new().take(WORKING_SET).collect();
    let on = limit_options(true);
    let off = limit_options(false);
    let base = Instant::now();
    let table = Arc::new(RoutingTable::from_raw(&common::table(100), 0).unwrap());
    let mut group = c.benchmark_group(format!("client_limit/{db_name}"));
    group.throughput(Throughput::Elements(1));
    // (name, options, mask of the working set, clock step per connection)
    let cases = [
        ("returning_client", &on, 0usize, Duration::from_millis(100)),
        (
            "working_set",
            &on,
            WORKING_SET - 1,
            Duration::from_micros(10),
        ),
        ("limits_off", &off, 0, Duration::from_millis(100)),
    ];
    for (kind, options, mask, step) in cases {
        let clients = PerClient::new(CLIENT_TABLE_SIZE);
        let (mut i, mut now, mut refused) = (0usize, base, 0u64);
        group.bench_function(kind, |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                now += step;
                let ok = limit_client(&table, &clients, options, &app, working_set[i], now);
                refused += u64::from(!ok);
                std::hint::black_box(ok)
            })
        });
        assert_eq!(refused, 0, "{kind}: the limits refused a connection");
    }
    group.finish();

    // A whole decision, and the same followed by the stage, interleaved.
    for (kind, max_entries, mask, step) in [
        (
            "fresh_client",
            4096,
            WORKING_SET - 1,
            Duration::from_micros(10),
        ),
        (
            "returning_client",
            BindingConfig::default().max_entries,
            0,
            Duration::from_millis(100),
        ),
    ] {
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
        let (plain, limited) = (router(max_entries), router(max_entries));
        let clients = PerClient::new(CLIENT_TABLE_SIZE);
        let (mut i, mut j, mut now) = (0usize, 0usize, base);
        let mut pair = |iters| {
            alternate(
                iters,
                || {
                    i = (i + 1) & mask;
                    connect_plain(&geo, &plain, &app, working_set[i])
                },
                || {
                    j = (j + 1) & mask;
                    now += step;
                    connect_plain(&geo, &limited, &app, working_set[j])
                        && limit_client(&table, &clients, &on, &app, working_set[j], now)
                },
            )
        };
        let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..PAIRED_ROUNDS {
            let (t_plain, t_limited) = pair(PAIRED_CALLS);
            offs.push(t_plain.as_nanos() as f64 / PAIRED_CALLS as f64);
            ons.push(t_limited.as_nanos() as f64 / PAIRED_CALLS as f64);
            ratios.push(t_limited.as_secs_f64() / t_plain.as_secs_f64());
        }
        let (d, l) = (median(&mut offs), median(&mut ons));
        println!(
            "client_limit/{db_name}/paired/{kind}/100: paired medians over {PAIRED_ROUNDS} rounds: decision {d:.1} ns, decision + limit_client {l:.1} ns (+{:.1} ns), ratio {:.3}",
            l - d,
            median(&mut ratios)
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decision, metrics_cost, client_limit
}
criterion_main!(benches);
