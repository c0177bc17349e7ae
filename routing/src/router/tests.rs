//! Decisions end to end over the core: reservations, stickiness, failover
//! and reloads, on injected time.

// Tests read the clock once for an arbitrary base instant; the code under
// test never does.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::raw::RawTable;
use crate::testutil::{backend, table};
use geoedge_geoip::{CountryCode, GeoPoint, Location};
use std::collections::HashMap;
use std::time::Duration;

fn london() -> Location {
    Location {
        country: Some(CountryCode::parse("GB").unwrap()),
        continent: None,
        subdivision: None,
        point: GeoPoint::new(51.5, -0.12),
    }
}

fn router(raw: &RawTable) -> Router {
    let t = Arc::new(RoutingTable::from_raw(raw, 0).unwrap());
    Router::new(t, RegionId::new("eu"), BindingConfig::default())
}

fn req<'a>(app: &'a AppId, ip: &str, loc: Option<&'a Location>) -> Request<'a> {
    Request {
        app,
        ip: ip.parse().unwrap(),
        location: loc,
        exclude: &[],
    }
}

#[test]
fn hard_limit_holds_under_a_burst_and_reservations_release_once() {
    let r = router(&table(vec![backend("only", "eu", Some("GB"), 10, 50)]));
    let app = AppId::default_app();
    let l = london();
    let now = Instant::now();
    let held: Vec<Route> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..10)
            .map(|t| {
                let (r, app, l) = (&r, &app, &l);
                s.spawn(move || {
                    (0..50)
                        .filter_map(|i| {
                            r.decide(&req(app, &format!("198.51.{t}.{i}"), Some(l)), now)
                                .ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(held.len(), 50);
    assert_eq!(r.table().active("only"), 50);
    assert_eq!(r.stats().count(DecisionKind::None), 450);
    drop(held);
    assert_eq!(r.table().active("only"), 0);
}

#[test]
fn sticky_until_ineligible_or_idle_for_ttl() {
    let raw = table(vec![
        backend("gb1", "eu", Some("GB"), 10, 20),
        backend("gb2", "eu", Some("GB"), 10, 20),
    ]);
    let r = router(&raw);
    let app = AppId::default_app();
    let l = london();
    let t0 = Instant::now();
    let first = r.decide(&req(&app, "203.0.113.5", Some(&l)), t0).unwrap();
    assert_eq!(first.backend().id.as_str(), "gb1");
    assert_eq!(first.kind, DecisionKind::Country);
    // gb1 now has more load than gb2, yet the client comes back to gb1.
    let again = r
        .decide(
            &req(&app, "203.0.113.5", Some(&l)),
            t0 + Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(again.backend().id.as_str(), "gb1");
    assert_eq!(again.kind, DecisionKind::Sticky);
    drop(again);
    // A different client goes to the less loaded gb2.
    let other = r.decide(&req(&app, "203.0.113.6", Some(&l)), t0).unwrap();
    assert_eq!(other.backend().id.as_str(), "gb2");
    drop((first, other));

    // Drain gb1: the client moves, and is re-bound to gb2.
    let mut drained = raw.clone();
    drained.backends[0].healthy = 0.into();
    r.table().apply(&drained, 1).unwrap();
    let moved = r
        .decide(
            &req(&app, "203.0.113.5", Some(&l)),
            t0 + Duration::from_secs(6),
        )
        .unwrap();
    assert_eq!(moved.backend().id.as_str(), "gb2");
    drop(moved);
    r.table().apply(&raw, 2).unwrap();
    let stays = r
        .decide(
            &req(&app, "203.0.113.5", Some(&l)),
            t0 + Duration::from_secs(7),
        )
        .unwrap();
    assert_eq!(
        (stays.backend().id.as_str(), stays.kind),
        ("gb2", DecisionKind::Sticky)
    );
    drop(stays);

    // Idle for the TTL (600 s): a fresh decision (gb1 and gb2 both idle, gb1 by id).
    let fresh = r
        .decide(
            &req(&app, "203.0.113.5", Some(&l)),
            t0 + Duration::from_secs(7 + 600),
        )
        .unwrap();
    assert_eq!(
        (fresh.backend().id.as_str(), fresh.kind),
        ("gb1", DecisionKind::Country)
    );
}

#[test]
fn sticky_gives_way_at_the_hard_limit() {
    let r = router(&table(vec![
        backend("a", "eu", Some("GB"), 1, 1),
        backend("b", "eu", Some("GB"), 1, 1),
    ]));
    let app = AppId::default_app();
    let t0 = Instant::now();
    let first = r.decide(&req(&app, "192.0.2.1", None), t0).unwrap();
    assert_eq!(first.backend().id.as_str(), "a");
    // Same client again while its first connection holds a's only slot.
    let second = r.decide(&req(&app, "192.0.2.1", None), t0).unwrap();
    assert_eq!(second.backend().id.as_str(), "b");
    assert!(r.decide(&req(&app, "192.0.2.1", None), t0).is_err());
}

#[test]
fn failover_excludes_tried_backends_and_rebinds() {
    let r = router(&table(vec![
        backend("a", "eu", Some("GB"), 10, 20),
        backend("b", "us", Some("US"), 10, 20),
    ]));
    let app = AppId::default_app();
    let l = london();
    let t0 = Instant::now();
    let first = r.decide(&req(&app, "192.0.2.9", Some(&l)), t0).unwrap();
    assert_eq!(first.backend().id.as_str(), "a");
    let tried = [first.backend().id.clone()];
    drop(first); // connect failed: slot released
    assert_eq!(r.table().active("a"), 0);
    let next = r
        .decide(
            &Request {
                exclude: &tried,
                ..req(&app, "192.0.2.9", Some(&l))
            },
            t0,
        )
        .unwrap();
    assert_eq!(next.backend().id.as_str(), "b");
    drop(next);
    let sticky = r.decide(&req(&app, "192.0.2.9", Some(&l)), t0).unwrap();
    assert_eq!(
        (sticky.backend().id.as_str(), sticky.kind),
        ("b", DecisionKind::Sticky)
    );
}

#[test]
fn counts_survive_reloads_for_backends_that_stay() {
    let raw = table(vec![
        backend("a", "eu", Some("GB"), 10, 20),
        backend("b", "eu", None, 10, 20),
    ]);
    let r = router(&raw);
    let app = AppId::default_app();
    let l = london();
    let held = r
        .decide(&req(&app, "192.0.2.1", Some(&l)), Instant::now())
        .unwrap();
    let mut edited = raw.clone();
    edited.backends[0].soft_limit = 5.into();
    edited.backends.remove(1);
    let applied = r.table().apply(&edited, 10).unwrap();
    assert_eq!(applied.generation, 2);
    assert_eq!(applied.diff.changed.len(), 1);
    assert_eq!(applied.diff.removed.len(), 1);
    assert_eq!(r.table().snapshot().backend("a").unwrap().active(), 1);
    drop(held);
    assert_eq!(r.table().snapshot().backend("a").unwrap().active(), 0);
}

#[test]
fn invalid_or_emptying_edits_keep_the_table() {
    let raw = table(vec![backend("a", "eu", Some("GB"), 10, 20)]);
    let r = router(&raw);
    let mut bad = raw.clone();
    bad.backends[0].hard_limit = (-1).into();
    let e = r.table().apply(&bad, 1).unwrap_err();
    assert_eq!(e.reason(), crate::table::RejectReason::Invalid);
    assert_eq!(e.row_errors().len(), 1);
    let empty = table(vec![]);
    assert_eq!(
        r.table().apply(&empty, 1).unwrap_err().reason(),
        crate::table::RejectReason::Emptied
    );
    let mut all_deleted = raw.clone();
    all_deleted.backends[0].deleted = 1.into();
    assert!(r.table().apply(&all_deleted, 1).is_err());
    assert_eq!(r.table().generation(), 1);
    assert_eq!(r.table().stats().rejected_total(), 3);
    assert_eq!(r.table().snapshot().backend("a").unwrap().hard_limit, 20);
}

#[test]
fn explain_lists_every_candidate_best_first() {
    let mut sick = backend("sick", "eu", Some("GB"), 10, 20);
    sick.healthy = 0.into();
    let r = router(&table(vec![
        sick,
        backend("gb", "eu", Some("GB"), 10, 20),
        backend("us", "us", Some("US"), 10, 20),
    ]));
    let app = AppId::default_app();
    let l = london();
    let e = r.explain(&req(&app, "81.2.69.160", Some(&l)));
    assert_eq!(e.backend.as_ref().unwrap().as_str(), "gb");
    assert_eq!(e.kind, DecisionKind::Country);
    assert!(e.reason.contains("country (GB)"), "{}", e.reason);
    let ids: Vec<_> = e.candidates.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["gb", "us", "sick"]);
    assert_eq!(e.candidates[2].why_not, Some(WhyNot::Unhealthy));
    assert!(e.candidates[1].distance_km.unwrap() > 5000.0);
    // Explaining reserves and binds nothing.
    assert_eq!(r.table().active("gb"), 0);
    assert!(r.bindings().is_empty());
    let unknown = r.explain(&req(&AppId::new("nope"), "81.2.69.160", Some(&l)));
    assert!(unknown.backend.is_none() && unknown.candidates.is_empty());
}

fn fail_connects(r: &Router, id: &str, n: usize, now: Instant) {
    let b = r.table().snapshot().backend(id).unwrap().clone();
    for _ in 0..n {
        r.report_connect(&b, false, now);
    }
}

#[test]
fn ejected_backends_are_skipped_sticky_clients_move_and_one_trial_readmits() {
    let r = router(&table(vec![
        backend("gb1", "eu", Some("GB"), 10, 20),
        backend("gb2", "eu", Some("GB"), 10, 20),
    ]));
    let app = AppId::default_app();
    let l = london();
    let t0 = Instant::now();
    let first = r.decide(&req(&app, "203.0.113.1", Some(&l)), t0).unwrap();
    assert_eq!(first.backend().id.as_str(), "gb1");
    drop(first);
    // Two failures do not eject; the third does.
    fail_connects(&r, "gb1", 2, t0);
    let again = r.decide(&req(&app, "203.0.113.1", Some(&l)), t0).unwrap();
    assert_eq!(
        (again.backend().id.as_str(), again.kind),
        ("gb1", DecisionKind::Sticky)
    );
    drop(again);
    fail_connects(&r, "gb1", 1, t0);
    let gb1 = r.table().snapshot().backend("gb1").unwrap().clone();
    assert_eq!(gb1.load.health().ejections(), 1);
    // The bound client moves (and is re-bound), fresh clients go elsewhere.
    let moved = r.decide(&req(&app, "203.0.113.1", Some(&l)), t0).unwrap();
    assert_eq!(
        (moved.backend().id.as_str(), moved.kind),
        ("gb2", DecisionKind::Country)
    );
    drop(moved);
    let t1 = t0 + Duration::from_millis(999);
    for i in 0..5 {
        let fresh = r
            .decide(&req(&app, &format!("203.0.113.{}", 10 + i), Some(&l)), t1)
            .unwrap();
        assert_eq!(fresh.backend().id.as_str(), "gb2");
    }
    let e = r.explain(&req(&app, "203.0.113.99", Some(&l)));
    let c = e
        .candidates
        .iter()
        .find(|c| c.id.as_str() == "gb1")
        .unwrap();
    assert_eq!(
        (c.health, c.why_not, c.eligible),
        (HealthState::Ejected, Some(WhyNot::Ejected), false)
    );
    // The backoff (1 s) is over: one client is let through as the trial,
    // the next goes elsewhere.
    let t2 = t0 + Duration::from_secs(1);
    let trial = r.decide(&req(&app, "203.0.113.50", Some(&l)), t2).unwrap();
    assert_eq!(trial.backend().id.as_str(), "gb1");
    let other = r.decide(&req(&app, "203.0.113.51", Some(&l)), t2).unwrap();
    assert_eq!(other.backend().id.as_str(), "gb2");
    drop(other);
    assert_eq!(
        r.report_connect(trial.backend(), true, t2),
        Some(HealthChange::Readmitted)
    );
    drop(trial);
    let back = r.decide(&req(&app, "203.0.113.52", Some(&l)), t2).unwrap();
    assert_eq!(back.backend().id.as_str(), "gb1");
    assert_eq!(gb1.load.health().state(true), HealthState::Up);
}

#[test]
fn backends_down_by_checks_are_skipped_and_the_operator_always_wins() {
    let raw = table(vec![
        backend("gb1", "eu", Some("GB"), 10, 20),
        backend("gb2", "eu", Some("GB"), 10, 20),
    ]);
    let r = router(&raw);
    let app = AppId::default_app();
    let l = london();
    let t0 = Instant::now();
    let pick = |ip: &str| {
        r.decide(&req(&app, ip, Some(&l)), t0)
            .map(|route| route.backend().id.to_string())
    };
    let snap = r.table().snapshot();
    let (gb1, gb2) = (
        snap.backend("gb1").unwrap().clone(),
        snap.backend("gb2").unwrap().clone(),
    );
    for _ in 0..2 {
        assert_eq!(r.report_check(&gb1, Err(ConnectFailure::Refused), t0), None);
    }
    assert_eq!(pick("198.51.100.1").unwrap(), "gb1");
    assert_eq!(
        r.report_check(&gb1, Err(ConnectFailure::Timeout), t0),
        Some(HealthChange::Down)
    );
    assert_eq!(pick("198.51.100.1").unwrap(), "gb2");
    assert_eq!(pick("198.51.100.2").unwrap(), "gb2");
    // Both down: no backend, and the explanation says why.
    for _ in 0..3 {
        r.report_check(&gb2, Err(ConnectFailure::Refused), t0);
    }
    assert!(pick("198.51.100.3").is_err());
    let e = r.explain(&req(&app, "198.51.100.3", Some(&l)));
    assert!(e.reason.ends_with(", 2 down"), "{}", e.reason);
    assert!(e.candidates.iter().all(|c| c.health == HealthState::Down));
    // Checks bring gb1 back after two successes.
    assert_eq!(r.report_check(&gb1, Ok(()), t0), None);
    assert_eq!(r.report_check(&gb1, Ok(()), t0), Some(HealthChange::Up));
    assert_eq!(pick("198.51.100.4").unwrap(), "gb1");
    assert_eq!(r.check_stats().ok(), 2);
    assert_eq!(r.check_stats().failed(ConnectFailure::Refused), 5);
    // The operator's healthy = 0 wins over passing checks.
    let mut edited = raw.clone();
    edited.backends[0].healthy = 0.into();
    r.table().apply(&edited, 1).unwrap();
    for _ in 0..2 {
        r.report_check(&gb2, Ok(()), t0);
    }
    assert_eq!(pick("198.51.100.4").unwrap(), "gb2");
    let e = r.explain(&req(&app, "198.51.100.5", Some(&l)));
    let c = e
        .candidates
        .iter()
        .find(|c| c.id.as_str() == "gb1")
        .unwrap();
    assert_eq!(
        (c.health, c.why_not),
        (HealthState::OperatorDown, Some(WhyNot::Unhealthy))
    );
}

#[test]
fn health_survives_reloads_for_backends_that_stay() {
    let raw = table(vec![
        backend("gb1", "eu", Some("GB"), 10, 20),
        backend("gb2", "eu", Some("GB"), 10, 20),
    ]);
    let r = router(&raw);
    let app = AppId::default_app();
    let l = london();
    let t0 = Instant::now();
    fail_connects(&r, "gb1", 3, t0);
    let mut edited = raw.clone();
    edited.backends[0].soft_limit = 5.into();
    edited.backends[1].weight = 2.into();
    assert_eq!(r.table().apply(&edited, 1).unwrap().diff.changed.len(), 2);
    let snap = r.table().snapshot();
    let gb1 = snap.backend("gb1").unwrap();
    assert_eq!(gb1.soft_limit, 5);
    assert_eq!(gb1.load.health().state(true), HealthState::Ejected);
    let route = r.decide(&req(&app, "192.0.2.7", Some(&l)), t0).unwrap();
    assert_eq!(route.backend().id.as_str(), "gb2");
    // Removed and added back, a backend starts afresh.
    drop(route);
    let mut without = raw.clone();
    without.backends.remove(0);
    r.table().apply(&without, 2).unwrap();
    r.table().apply(&raw, 3).unwrap();
    let gb1 = r.table().snapshot().backend("gb1").unwrap().clone();
    assert_eq!(gb1.load.health().state(true), HealthState::Up);
    let route = r.decide(&req(&app, "192.0.2.8", Some(&l)), t0).unwrap();
    assert_eq!(route.backend().id.as_str(), "gb1");
}

#[test]
fn checks_this_host_failed_to_make_move_no_counter() {
    let raw = table(vec![
        backend("gb1", "eu", Some("GB"), 10, 20),
        backend("gb2", "eu", Some("GB"), 10, 20),
    ]);
    let r = router(&raw);
    let t0 = Instant::now();
    let gb1 = r.table().snapshot().backend("gb1").unwrap().clone();
    // Far more local failures than `fall`: still up.
    for _ in 0..10 {
        assert_eq!(r.report_check(&gb1, Err(ConnectFailure::Local), t0), None);
    }
    assert_eq!(gb1.load.health().state(true), HealthState::Up);
    assert_eq!(r.check_stats().failed(ConnectFailure::Local), 10);
    assert_eq!(r.check_stats().failed(ConnectFailure::Other), 0);
    // Nor do they break a streak of real failures: two real ones, local
    // ones between, and the third real one takes it down.
    r.report_check(&gb1, Err(ConnectFailure::Refused), t0);
    r.report_check(&gb1, Err(ConnectFailure::Refused), t0);
    r.report_check(&gb1, Err(ConnectFailure::Local), t0);
    assert_eq!(
        r.report_check(&gb1, Err(ConnectFailure::Refused), t0),
        Some(HealthChange::Down)
    );
}

#[test]
fn a_flood_of_new_clients_leaves_returning_clients_sticky() {
    let raw = table(vec![
        backend("gb1", "eu", Some("GB"), 10, 1000),
        backend("gb2", "eu", Some("GB"), 10, 1000),
    ]);
    let t = Arc::new(RoutingTable::from_raw(&raw, 0).unwrap());
    let r = Router::new(
        t,
        RegionId::new("eu"),
        BindingConfig {
            max_entries: 1000,
            ..BindingConfig::default()
        },
    );
    let app = AppId::default_app();
    let l = london();
    let t0 = Instant::now();
    let ip = |i: u32| std::net::IpAddr::from((0x0a00_0000 | i).to_be_bytes());
    let decide = |i: u32, now: Instant| {
        let route = r
            .decide(
                &Request {
                    app: &app,
                    ip: ip(i),
                    location: Some(&l),
                    exclude: &[],
                },
                now,
            )
            .unwrap();
        (route.backend().id.clone(), route.kind)
    };
    // 100 clients connect twice (the first connection still open): the
    // second connection is sticky.
    let mut first = Vec::new();
    for i in 0..100 {
        let held = r
            .decide(
                &Request {
                    app: &app,
                    ip: ip(i),
                    location: Some(&l),
                    exclude: &[],
                },
                t0,
            )
            .unwrap();
        let (again, kind) = decide(i, t0 + Duration::from_secs(1));
        assert_eq!((&again, kind), (&held.backend().id, DecisionKind::Sticky));
        first.push(again);
        drop(held);
    }
    // 5,000 new clients, each connecting once: five tables' worth.
    for i in 1000..6000 {
        let (_, kind) = decide(i, t0 + Duration::from_secs(2));
        assert_ne!(kind, DecisionKind::Sticky);
    }
    assert!(r.bindings().len() <= 1000);
    for (i, backend) in first.iter().enumerate() {
        let (got, kind) = decide(i as u32, t0 + Duration::from_secs(3));
        assert_eq!((&got, kind), (backend, DecisionKind::Sticky), "client {i}");
    }
}

/// London's own backend full by the fleet's load, three others with room
/// 10, 30 and 60 below their soft limits.
fn spilling_fleet(r: &Router) {
    let snap = r.table().snapshot();
    for (id, remote) in [("lhr", 10), ("fra", 0), ("iad", 10), ("gru", 40)] {
        snap.backend(id).unwrap().load.set_remote(remote);
    }
}

fn spill_table() -> RawTable {
    table(vec![
        backend("lhr", "eu", Some("GB"), 10, 100),
        backend("fra", "eu", Some("DE"), 10, 100),
        backend("iad", "us", Some("US"), 40, 100),
        backend("gru", "sa", Some("BR"), 100, 200),
    ])
}

/// Where `n` new clients from `net`.0.0.0/8 go.
fn shares(r: &Router, net: u8, n: usize) -> HashMap<String, usize> {
    let app = AppId::default_app();
    let l = london();
    let now = Instant::now();
    let mut got = HashMap::new();
    for i in 0..n {
        let ip = format!("{net}.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
        let route = r.decide(&req(&app, &ip, Some(&l)), now).unwrap();
        *got.entry(route.backend().id.to_string()).or_default() += 1;
    }
    got
}

#[test]
fn a_fleets_spill_is_spread_over_the_next_backends_by_headroom() {
    // One edge alone goes to the best backend with room, every time.
    let alone = router(&spill_table());
    spilling_fleet(&alone);
    assert_eq!(
        shares(&alone, 10, 200),
        HashMap::from([("fra".into(), 200)])
    );
    assert_eq!(alone.spills_spread(), 0);

    // In a fleet, spilled clients go 10% / 30% / 60% (the headroom).
    let fleet = router(&spill_table()).with_spill_spread(7);
    spilling_fleet(&fleet);
    let got = shares(&fleet, 10, 2000);
    let near = |id: &str, want: usize| {
        let n = got.get(id).copied().unwrap_or(0);
        assert!(
            n.abs_diff(want) <= 60,
            "{id}: {n} of 2000, want about {want}: {got:?}"
        );
    };
    near("fra", 200);
    near("iad", 600);
    near("gru", 1200);
    assert!(!got.contains_key("lhr"));
    assert_eq!(fleet.spills_spread(), 2000);
    let e = fleet.explain(&req(&AppId::default_app(), "2001:db8::1", Some(&london())));
    let spread: Vec<(&str, u32)> = e
        .spread
        .iter()
        .map(|s| (s.id.as_str(), s.headroom))
        .collect();
    assert_eq!(spread, [("fra", 10), ("iad", 30), ("gru", 60)]);
    assert!(e.reason.contains("spread by headroom"), "{}", e.reason);

    // With room at London again, nothing spills and nothing is spread.
    fleet
        .table()
        .snapshot()
        .backend("lhr")
        .unwrap()
        .load
        .set_remote(0);
    assert_eq!(
        shares(&fleet, 11, 100),
        HashMap::from([("lhr".into(), 100)])
    );
    assert_eq!(fleet.spills_spread(), 2000);
    assert!(fleet
        .explain(&req(&AppId::default_app(), "2001:db8::1", Some(&london())))
        .spread
        .is_empty());
}

#[test]
fn a_restarted_owner_admits_only_the_fallback_to_its_own_backends_for_a_term() {
    use crate::global::{Fallback, LeaseGate};
    use crate::model::PopId;
    let raw = table(vec![
        backend("own", "eu", Some("GB"), 4, 4),
        backend("far", "us", Some("US"), 10, 100),
    ]);
    let app = AppId::default_app();
    let l = london();
    let now = Instant::now();
    let until = now + Duration::from_secs(3);
    let gate = |fallback| {
        let g = LeaseGate::new(PopId::new("lon"), RegionId::new("eu"), fallback)
            .with_quiet_until(until);
        g.set_pops(2);
        // us's edge does not answer: its backend takes the fallback too.
        let far = BackendId::new("far");
        let id = g.with_holder(|h| h.handle_sent(&far, now));
        g.with_holder(|h| h.handle_unanswered(&far, id));
        Arc::new(g)
    };
    // strict: none of its own while quiet; the clients go elsewhere
    // (here to the fallback of us's backend: strict, none either).
    let r = router(&raw).with_leases(gate(Fallback::Strict));
    assert!(r.decide(&req(&app, "198.51.100.1", Some(&l)), now).is_err());
    // share: hard_limit 4 / 2 POPs = 2 of its own, then the next best.
    let r = router(&raw).with_leases(gate(Fallback::Share));
    let held: Vec<Route> = (1..=3)
        .map(|i| {
            r.decide(&req(&app, &format!("198.51.100.{i}"), Some(&l)), now)
                .unwrap()
        })
        .collect();
    let got: Vec<&str> = held.iter().map(|h| h.backend().id.as_str()).collect();
    assert_eq!(got, ["own", "own", "far"]);
    // A term later, its own backend takes clients up to its hard limit.
    let later: Vec<Route> = (4..=5)
        .map(|i| {
            r.decide(&req(&app, &format!("198.51.100.{i}"), Some(&l)), until)
                .unwrap()
        })
        .collect();
    assert!(later.iter().all(|h| h.backend().id.as_str() == "own"));
}

#[test]
fn a_backend_whose_lease_is_asked_for_is_left_out_unless_nothing_else_takes_the_client() {
    use crate::global::{Fallback, Grant, LeaseGate};
    use crate::model::PopId;
    let raw = table(vec![
        backend("far", "us", Some("US"), 10, 30),
        backend("own", "eu", Some("FR"), 10, 30),
    ]);
    let app = AppId::default_app();
    let ny = Location {
        country: Some(CountryCode::parse("US").unwrap()),
        continent: None,
        subdivision: None,
        point: GeoPoint::new(40.7, -74.0),
    };
    let now = Instant::now();
    let gate = Arc::new(LeaseGate::new(
        PopId::new("lon"),
        RegionId::new("eu"),
        Fallback::Share,
    ));
    gate.set_pops(2);
    let r = router(&raw).with_leases(Arc::clone(&gate));
    // No lease of far yet: the client goes to the next best, and the route
    // says a better one waits for its lease.
    let first = r
        .decide(&req(&app, "198.51.100.1", Some(&ny)), now)
        .unwrap();
    assert_eq!(first.backend().id.as_str(), "own");
    assert!(first.lease_pending);
    drop(first);
    // The lease arrives: far, within it.
    let far = BackendId::new("far");
    let id = gate.with_holder(|h| h.handle_sent(&far, now));
    let lasts = Duration::from_secs(3);
    gate.with_holder(|h| h.handle_grant(&far, id, Grant { slots: 2, lasts }));
    let second = r
        .decide(&req(&app, "198.51.100.2", Some(&ny)), now)
        .unwrap();
    assert_eq!(second.backend().id.as_str(), "far");
    assert!(!second.lease_pending);
    // With nothing else and no lease of far: far within the share, as a
    // last resort.
    let only =
        router(&table(vec![backend("far", "us", Some("US"), 10, 30)])).with_leases(Arc::new(
            LeaseGate::new(PopId::new("lon"), RegionId::new("eu"), Fallback::Share),
        ));
    let last = only
        .decide(&req(&app, "198.51.100.3", Some(&ny)), now)
        .unwrap();
    assert_eq!(last.backend().id.as_str(), "far");
    assert!(last.lease_pending);
}
