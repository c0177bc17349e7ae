//! What the fleet (`geoedge run --nats`, issue 19) adds to `Router::decide`,
//! ns per decision, over 10, 100 and 1,000 backends (`common::table`).
//!
//! Every decision is for a fresh client (65,536 addresses, a binding
//! table of 4,096, so each one scores, reserves and binds) located in
//! London, without GeoIP (the location is looked up once): the routing
//! core alone, as `steps/…/route_fresh_no_geoip` in `decision.rs`. Each
//! route is dropped right after the decision, so the connection counts and
//! the lease's use stay where they were set. Every router is POP `us`'s
//! (region `us`, which only places clients GeoIP cannot locate), so
//! London's backends (region `eu`) are another POP's, but for
//! `c_lease_own`.
//!
//! - `a_no_fleet`: `Router::new`, what an edge without `--nats` runs.
//! - `b_global_load`: the other edges' connections set on every backend
//!   (`BackendLoad::set_remote`, 0–499 of the soft limit of 1,000, as the
//!   load reports would), so scoring compares the fleet's load.
//! - `c_lease_remote`: `Router::with_leases` with a `LeaseGate` holding a
//!   valid lease of every `eu` backend: the client goes to a GB backend of
//!   POP eu and is admitted within the lease (a slot taken and given back).
//! - `c_lease_own`: the same, but the gate is POP eu's: the client goes
//!   to this POP's own backend, and needs no lease: what leases cost the
//!   clients of a POP's own backends.
//! - `d_spill_one_edge`: every GB backend at its soft limit by the other
//!   edges' load, so the London client spills to a DE or FR backend, and
//!   the router does not spread (one edge's choice: the next best).
//! - `d_spill_spread`: the same, with `Router::with_spill_spread`: the
//!   choice among the next three with room, by headroom.
//!
//! Besides criterion's estimates, the benchmark prints for each size the
//! medians over 41 rounds in which every case runs 20,000 decisions,
//! interleaved in blocks of 1,000 (the order rotating every block), and the
//! median per-round ratio of each case to `a_no_fleet`: load from other
//! processes on a shared machine falls on all of them alike.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use geoedge_geoip::Location;
use geoedge_routing::global::{Fallback, Grant, LeaseGate};
use geoedge_routing::{AppId, BindingConfig, PopId, RegionId, Request, Router, RoutingTable};

mod common;

const WORKING_SET: usize = 1 << 16;

/// The term of a lease (the edge's default); `now` stays where it was set,
/// so the lease never runs out.
const LEASE_FOR: Duration = Duration::from_secs(3);

/// One case: a router over its own table (its own connection counts), and
/// where its clients are.
struct Case {
    name: &'static str,
    router: Router,
    location: Location,
    /// What to check once measured (that the case did what it says).
    check: fn(&Router),
}

fn router(table: &Arc<RoutingTable>) -> Router {
    Router::new(
        Arc::clone(table),
        RegionId::new("us"),
        BindingConfig {
            max_entries: 4096,
            ..BindingConfig::default()
        },
    )
}

fn cases(n: usize, london: Location) -> Vec<Case> {
    let table = || Arc::new(RoutingTable::from_raw(&common::table(n), 0).unwrap());
    let none: fn(&Router) = |_| {};

    let a = router(&table());

    let t = table();
    for (i, b) in t.snapshot().backends.iter().enumerate() {
        b.load.set_remote((i as u32 * 37) % 500);
    }
    let b = router(&t);

    // A gate of POP `pop` holding a valid lease of every other POP's
    // backend.
    let leased = |t: &Arc<RoutingTable>, pop: &str, now: Instant| {
        let gate = Arc::new(LeaseGate::new(
            PopId::new(pop),
            RegionId::new(pop),
            Fallback::Share,
        ));
        gate.set_pops(4);
        for b in t.snapshot().backends.iter() {
            if gate.is_remote(b) {
                gate.with_holder(|h| {
                    let id = h.handle_sent(&b.id, now);
                    assert!(h.handle_grant(
                        &b.id,
                        id,
                        Grant {
                            slots: 100,
                            lasts: LEASE_FOR,
                        },
                    ));
                });
            }
        }
        router(t).with_leases(gate)
    };
    let now = *NOW;
    let c_remote = leased(&table(), "us", now);
    let c_own = leased(&table(), "eu", now);

    // Every GB backend at its soft limit by the others' load.
    let spilling = || {
        let t = table();
        for b in t.snapshot().backends.iter() {
            if b.country.map(|c| c.as_str() == "GB").unwrap_or(false) {
                b.load.set_remote(b.soft_limit);
            }
        }
        t
    };
    let d_one = router(&spilling());
    let d_spread = router(&spilling()).with_spill_spread(0x5EED);

    vec![
        Case {
            name: "a_no_fleet",
            router: a,
            location: london,
            check: none,
        },
        Case {
            name: "b_global_load",
            router: b,
            location: london,
            check: none,
        },
        Case {
            name: "c_lease_remote",
            router: c_remote,
            location: london,
            check: |r| {
                let g = r.leases().unwrap();
                let by_lease = g.by_lease.load(std::sync::atomic::Ordering::Relaxed);
                let other = g.by_fallback.load(std::sync::atomic::Ordering::Relaxed)
                    + g.refused.load(std::sync::atomic::Ordering::Relaxed);
                assert!(
                    by_lease > 0 && other == 0,
                    "{by_lease} by lease, {other} not"
                );
            },
        },
        Case {
            name: "c_lease_own",
            router: c_own,
            location: london,
            check: |r| {
                let g = r.leases().unwrap();
                assert_eq!(g.by_lease.load(std::sync::atomic::Ordering::Relaxed), 0);
            },
        },
        Case {
            name: "d_spill_one_edge",
            router: d_one,
            location: london,
            check: none,
        },
        Case {
            name: "d_spill_spread",
            router: d_spread,
            location: london,
            check: |r| assert!(r.spills_spread() > 0, "no spill was spread"),
        },
    ]
}

/// The instant every decision is made at.
static NOW: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// One decision, the route dropped at once.
fn decide(router: &Router, app: &AppId, ip: IpAddr, location: &Location) -> bool {
    let route = router.decide(
        &Request {
            app,
            ip,
            location: Some(location),
            exclude: &[],
        },
        *NOW,
    );
    route.is_ok()
}

/// Rounds of the paired measurement, and decisions per case in each.
const PAIRED_ROUNDS: usize = 41;
const PAIRED_CALLS: u64 = 20_000;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fleet_decision(c: &mut Criterion) {
    let (db, db_name) = common::city_db();
    let located = |ip: &str| {
        db.lookup(ip.parse().unwrap())
            .location()
            .copied()
            .expect("located")
    };
    let london = located("81.2.69.160");
    let app = AppId::default_app();
    let working_set: Vec<_> = common::Addresses::new().take(WORKING_SET).collect();
    let mut group = c.benchmark_group(format!("fleet_decision/{db_name}"));
    group.throughput(Throughput::Elements(1));
    for n in [10usize, 100, 1000] {
        let cases = cases(n, london);
        for case in &cases {
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::new(case.name, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & (WORKING_SET - 1);
                    std::hint::black_box(decide(&case.router, &app, working_set[i], &case.location))
                })
            });
            (case.check)(&case.router);
        }

        // Side by side: every case in each round, interleaved in blocks.
        let k = cases.len();
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); k];
        let mut next = vec![0usize; k];
        for round in 0..PAIRED_ROUNDS {
            let mut spent = vec![Duration::ZERO; k];
            let mut left = PAIRED_CALLS;
            let mut block = round;
            while left > 0 {
                let calls = left.min(1000);
                for s in 0..k {
                    let c = (s + block) % k;
                    let case = &cases[c];
                    let t = Instant::now();
                    for _ in 0..calls {
                        next[c] = (next[c] + 1) & (WORKING_SET - 1);
                        std::hint::black_box(decide(
                            &case.router,
                            &app,
                            working_set[next[c]],
                            &case.location,
                        ));
                    }
                    spent[c] += t.elapsed();
                }
                left -= calls;
                block += 1;
            }
            for c in 0..k {
                times[c].push(spent[c].as_nanos() as f64 / PAIRED_CALLS as f64);
                ratios[c].push(spent[c].as_secs_f64() / spent[0].as_secs_f64());
            }
        }
        for (c, case) in cases.iter().enumerate() {
            (case.check)(&case.router);
            println!(
                "fleet_decision/{db_name}/{n}/{}: paired median over {PAIRED_ROUNDS} rounds {:.1} ns, to a_no_fleet {:.3}",
                case.name,
                median(&mut times[c]),
                median(&mut ratios[c]),
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = fleet_decision
}
criterion_main!(benches);
