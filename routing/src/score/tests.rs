//! One test per routing property, plus property tests over random tables.

use super::*;
use crate::raw::BackendRow;
use crate::snapshot::{build, Snapshot};
use crate::testutil::{backend, table};
use geoedge_geoip::{CountryCode, GeoPoint, Location};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// An arbitrary instant: scoring reads health only through it, and these
/// tables' backends are all admitted.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

fn snap(rows: Vec<BackendRow>) -> Snapshot {
    build(&table(rows), |_| Arc::default()).unwrap()
}

fn loc(country: &str, lat: f64, lon: f64) -> Location {
    Location {
        country: Some(CountryCode::parse(country).unwrap()),
        continent: None,
        subdivision: None,
        point: GeoPoint::new(lat, lon),
    }
}

fn london() -> Location {
    loc("GB", 51.5, -0.12)
}

fn pick(s: &Snapshot, l: Option<&Location>, local: &str) -> Option<String> {
    let p = Placement::new(s, l, s.region_index(local));
    best(s, s.app("default")?, &p, &[], now())
        .map(|sc| s.backends[sc.index as usize].id.to_string())
}

fn set_active(s: &Snapshot, id: &str, n: u32) {
    let b = s.backend(id).unwrap();
    while b.load.active() < n {
        assert!(b.load.try_acquire(u32::MAX));
    }
}

#[test]
fn property1_ineligible_backends_are_never_chosen() {
    let mut sick = backend("a-sick", "eu", Some("GB"), 10, 20);
    sick.healthy = 0.into();
    let mut gone = backend("b-gone", "eu", Some("GB"), 10, 20);
    gone.deleted = 1.into();
    let mut other = backend("c-other-app", "eu", Some("GB"), 10, 20);
    other.app = "api".into();
    let mut drained = backend("d-weight0", "eu", Some("GB"), 10, 20);
    drained.weight = 0.into();
    let full = backend("e-full", "eu", Some("GB"), 1, 2);
    let far = backend("z-far", "ap", Some("SG"), 10, 20);
    let s = snap(vec![sick, gone, other, drained, full, far]);
    set_active(&s, "e-full", 2);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("z-far"));
    set_active(&s, "z-far", 20);
    assert_eq!(pick(&s, Some(&london()), "eu"), None);
}

#[test]
fn property2_country_beats_region_beats_distance() {
    let s = snap(vec![
        backend("de", "eu", Some("DE"), 10, 20),
        backend("gb", "eu", Some("GB"), 10, 20),
        backend("us", "us", Some("US"), 10, 20),
    ]);
    assert_eq!(pick(&s, Some(&london()), "us").as_deref(), Some("gb"));
    // France: no French backend, region eu beats the rest.
    assert_eq!(
        pick(&s, Some(&loc("FR", 48.85, 2.35)), "us").as_deref(),
        Some("de")
    );
    // Brazil (region sa, no backend there): nearest by distance, Ashburn before Frankfurt.
    assert_eq!(
        pick(&s, Some(&loc("BR", -23.5, -46.6)), "eu").as_deref(),
        Some("us")
    );
    // Country match wins even when a same-region backend is nearer.
    let s = snap(vec![
        backend("near-de", "eu", Some("DE"), 10, 20),
        backend("far-us-in-gb", "us", Some("GB"), 10, 20),
    ]);
    assert_eq!(
        pick(&s, Some(&london()), "eu").as_deref(),
        Some("far-us-in-gb")
    );
}

#[test]
fn property2_unlocated_clients_are_placed_at_the_pop_region() {
    let s = snap(vec![
        backend("eu", "eu", Some("DE"), 10, 20),
        backend("us", "us", Some("US"), 10, 20),
        backend("sa", "sa", Some("BR"), 10, 20),
    ]);
    assert_eq!(pick(&s, None, "sa").as_deref(), Some("sa"));
    assert_eq!(pick(&s, None, "us").as_deref(), Some("us"));
    // Unknown location with a country only (Country database): its region.
    let country_only = Location {
        country: Some(CountryCode::parse("CA").unwrap()),
        ..Location::default()
    };
    assert_eq!(pick(&s, Some(&country_only), "eu").as_deref(), Some("us"));
    let p = Placement::new(&s, None, s.region_index("sa"));
    assert!(!p.located);
}

#[test]
fn property3_lower_load_wins_and_weight_scales_capacity() {
    let s = snap(vec![
        backend("a", "eu", Some("GB"), 10, 20),
        backend("b", "eu", Some("GB"), 10, 20),
    ]);
    set_active(&s, "a", 3);
    set_active(&s, "b", 2);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("b"));
    let mut heavy = backend("heavy", "eu", Some("GB"), 10, 100);
    heavy.weight = 4.into();
    let s = snap(vec![backend("light", "eu", Some("GB"), 10, 100), heavy]);
    set_active(&s, "light", 2); // 2/10
    set_active(&s, "heavy", 7); // 7/40
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("heavy"));
}

#[test]
fn property3_over_soft_loses_within_proximity_and_spills_only_when_all_nearer_are_over() {
    let s = snap(vec![
        backend("gb1", "eu", Some("GB"), 2, 10),
        backend("gb2", "eu", Some("GB"), 2, 10),
        backend("de", "eu", Some("DE"), 2, 10),
    ]);
    set_active(&s, "gb1", 2); // at soft
    set_active(&s, "gb2", 1);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("gb2"));
    set_active(&s, "gb2", 2); // both GB at soft: spill to the region tier
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("de"));
    set_active(&s, "de", 5); // everything over soft: nearest proximity, least loaded
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("gb1"));
}

#[test]
fn property3_ties_break_by_id() {
    let s = snap(vec![
        backend("b", "eu", Some("GB"), 10, 20),
        backend("a", "eu", Some("GB"), 10, 20),
        backend("c", "eu", Some("GB"), 10, 20),
    ]);
    for _ in 0..3 {
        assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("a"));
    }
}

#[test]
fn exclude_skips_tried_backends() {
    let s = snap(vec![
        backend("a", "eu", Some("GB"), 10, 20),
        backend("b", "us", None, 10, 20),
    ]);
    let p = Placement::new(&s, Some(&london()), s.region_index("eu"));
    let excl = [crate::model::BackendId::new("a")];
    let got = best(&s, s.app("default").unwrap(), &p, &excl, now()).unwrap();
    assert_eq!(s.backends[got.index as usize].id.as_str(), "b");
    let r = rank(&s, s.app("default").unwrap(), &p, &excl);
    assert_eq!(r.last().unwrap().why_not, Some(WhyNot::Excluded));
}

// ---- property tests over random tables ----

#[derive(Debug, Clone)]
struct Gen {
    region: usize,
    country: Option<usize>,
    soft: u32,
    hard: u32,
    weight: u32,
    healthy: bool,
    active: u32,
    coords: Option<(f64, f64)>,
}

const REGIONS: [&str; 4] = ["eu", "us", "sa", "ap"];
const COUNTRIES: [&str; 6] = ["GB", "DE", "US", "BR", "JP", "ZA"];

fn gen_backend() -> impl Strategy<Value = Gen> {
    (
        0..4usize,
        proptest::option::of(0..6usize),
        0..5u32,
        0..6u32,
        0..3u32,
        proptest::bool::weighted(0.85),
        0..8u32,
        proptest::option::of((-60.0..60.0f64, -170.0..170.0f64)),
    )
        .prop_map(
            |(region, country, soft, extra, weight, healthy, active, coords)| Gen {
                region,
                country,
                soft,
                hard: soft + extra,
                weight,
                healthy,
                active,
                coords,
            },
        )
}

fn materialise(gens: &[Gen]) -> Snapshot {
    let rows = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut r = backend(
                &format!("b{i:02}"),
                REGIONS[g.region],
                g.country.map(|c| COUNTRIES[c]),
                g.soft as i64,
                g.hard as i64,
            );
            r.weight = (g.weight as i64).into();
            r.healthy = (g.healthy as i64).into();
            if let Some((la, lo)) = g.coords {
                r.latitude = la.into();
                r.longitude = lo.into();
            }
            r
        })
        .collect();
    let s = snap(rows);
    for (i, g) in gens.iter().enumerate() {
        set_active(&s, &format!("b{i:02}"), g.active);
    }
    s
}

fn client() -> impl Strategy<Value = Option<Location>> {
    proptest::option::of(
        (0..6usize, -60.0..60.0f64, -170.0..170.0f64)
            .prop_map(|(c, la, lo)| loc(COUNTRIES[c], la, lo)),
    )
}

proptest! {
    #[test]
    fn chosen_is_eligible_and_nothing_eligible_is_better(
        gens in proptest::collection::vec(gen_backend(), 1..12),
        client in client(),
        local in 0..4usize,
    ) {
        let s = materialise(&gens);
        let view = s.app("default").unwrap();
        let p = Placement::new(&s, client.as_ref(), s.region_index(REGIONS[local]));
        let eligible: Vec<Score> = view.all.iter().filter_map(|&i| {
            let b = &s.backends[i as usize];
            (b.healthy && !b.deleted && b.weight > 0 && b.active() < b.hard_limit)
                .then(|| Score::of(i, b, &p, b.active()))
        }).collect();
        match best(&s, view, &p, &[], now()) {
            None => prop_assert!(eligible.is_empty()),
            Some(c) => {
                let b = &s.backends[c.index as usize];
                // Property 1: eligible.
                prop_assert!(b.healthy && b.weight > 0 && b.active() < b.hard_limit);
                for e in &eligible {
                    // Property 3: spill only when every nearer backend is over soft.
                    if c.over_soft { prop_assert!(e.over_soft); }
                    // Property 2: no eligible backend under soft is nearer.
                    if !e.over_soft && e.proximity(&c).is_lt() {
                        prop_assert!(false, "nearer under-soft backend b{:02} skipped", e.index);
                    }
                    // Property 3: within equal proximity and soft status, load decides.
                    if e.over_soft == c.over_soft && e.proximity(&c).is_eq() {
                        prop_assert!(u128::from(c.active) * u128::from(e.capacity)
                            <= u128::from(e.active) * u128::from(c.capacity));
                    }
                }
                // Deterministic, and agrees with the full ranking.
                prop_assert_eq!(best(&s, view, &p, &[], now()).map(|x| x.index), Some(c.index));
                prop_assert_eq!(rank(&s, view, &p, &[])[0].score.index, c.index);
            }
        }
    }

    #[test]
    fn distance_tier_orders_by_great_circle_distance(
        gens in proptest::collection::vec(gen_backend(), 2..10),
        la in -60.0..60.0f64, lo in -170.0..170.0f64,
    ) {
        // A client in a country with no backend and no region mapping: all distance tier.
        let s = materialise(&gens);
        let client = loc("ZZ", la, lo);
        let p = Placement::new(&s, Some(&client), None);
        let view = s.app("default").unwrap();
        if let Some(c) = best(&s, view, &p, &[], now()) {
            let chosen = &s.backends[c.index as usize];
            let d = p.distance_km(chosen).unwrap();
            for &i in &view.candidates {
                let b = &s.backends[i as usize];
                let sc = Score::of(i, b, &p, b.active());
                if b.active() < b.hard_limit && sc.over_soft == c.over_soft {
                    prop_assert!(p.distance_km(b).unwrap() >= d - 1e-6);
                }
            }
        }
    }
}

#[test]
fn the_fleets_load_reaches_the_soft_limit_and_unlent_remote_connections_the_hard_one() {
    let s = snap(vec![
        backend("gb", "eu", Some("GB"), 10, 20),
        backend("de", "eu", Some("DE"), 10, 20),
    ]);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("gb"));
    // Other edges hold 10 connections to gb: at its soft limit by the
    // fleet's count, so the client spills to de.
    s.backend("gb").unwrap().load.set_remote(10);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("de"));
    // de over soft by the fleet too: proximity decides again.
    s.backend("de").unwrap().load.set_remote(15);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("gb"));
    let view = s.app("default").unwrap();
    let p = Placement::new(&s, Some(&london()), s.region_index("eu"));
    let ranked = rank(&s, view, &p, &[]);
    assert!(ranked.iter().all(|r| r.why_not.is_none()));
    assert_eq!(ranked[0].score.active, 10);
    // The others' connections that no slot lent by this edge accounts for
    // count against the hard limit: at 20, gb takes no more clients.
    let gb = &s.backend("gb").unwrap().load;
    gb.set_remote(20);
    assert_eq!(pick(&s, Some(&london()), "eu").as_deref(), Some("de"));
    assert!(!gb.try_acquire(20));
    // Those within slots it lent do not count twice.
    assert!(gb.lend(5, 20));
    gb.set_remote(20);
    assert_eq!((gb.unlent_remote(), gb.held()), (15, 20));
    gb.unlend(5);
    gb.set_remote(19);
    assert!(gb.try_acquire(20));
    assert!(!gb.try_acquire(20));
}
