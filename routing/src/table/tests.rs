use std::time::Duration;

use super::*;
use crate::snapshot::reuse_tests::{arb_edit, arb_spec, assert_same};
use crate::testutil::{backend, table};

fn rows(ids: &[&str]) -> RawTable {
    table(
        ids.iter()
            .map(|id| backend(id, "eu", Some("DE"), 10, 20))
            .collect(),
    )
}

fn connect(t: &RoutingTable, id: &str, n: u64) {
    let s = t.snapshot();
    let b = s.backend(id).unwrap();
    for _ in 0..n {
        b.load.connect_stats().observe(Duration::from_micros(200));
    }
}

#[test]
fn a_backend_at_one_of_the_edges_own_listeners_is_refused() {
    let t = RoutingTable::from_raw(&rows(&["a"]), 0).unwrap();
    let own: SocketAddr = "10.0.0.9:8443".parse().unwrap();
    t.refuse_backends_at(OwnListener(Box::new(move |addr| addr == own)));
    let mut looping = rows(&["a", "b"]);
    looping.backends[1].wg_ip = "10.0.0.9".into();
    looping.backends[1].port = 8443.into();
    let err = t.apply(&looping, 0).unwrap_err();
    assert_eq!(err.reason(), RejectReason::Invalid);
    let [e] = err.row_errors() else {
        panic!("{err:?}")
    };
    assert_eq!((e.table, e.row.as_str()), ("backends", "b"));
    assert!(e.message.contains("own listeners"), "{e}");
    // The table in service is kept, and `b` left no counters behind.
    assert!(t.snapshot().backend("b").is_none());
    assert!(t.loads.get("b").is_none());
    assert_eq!(
        t.stats().rejected[RejectReason::Invalid as usize].load(Ordering::Relaxed),
        1
    );
    // The same backend on another port is fine.
    looping.backends[1].port = 8444.into();
    t.apply(&looping, 0).unwrap();
    assert!(t.snapshot().backend("b").is_some());
}

#[test]
fn successful_connects_survive_the_removal_of_their_backend() {
    let t = RoutingTable::from_raw(&rows(&["a", "b"]), 0).unwrap();
    connect(&t, "a", 3);
    connect(&t, "b", 4);
    assert_eq!(t.successful_connects(), 7);

    // `a` is removed while idle: forgotten at once, its count kept.
    t.apply(&rows(&["b"]), 0).unwrap();
    assert!(t.loads.get("a").is_none());
    assert_eq!(t.successful_connects(), 7);

    // `b` is removed while a connection holds it: kept until a later
    // reload finds it idle, counting on meanwhile.
    let held = t.snapshot().backend("b").unwrap().load.clone();
    assert!(held.try_acquire(20));
    t.apply(&rows(&["c"]), 0).unwrap();
    held.connect_stats().observe(Duration::from_micros(200));
    assert_eq!(t.successful_connects(), 8);
    held.release();

    // Re-adding `a` starts it from zero; the total goes on; `b`, idle
    // now, is forgotten.
    t.apply(&rows(&["a", "c"]), 0).unwrap();
    assert!(t.loads.get("b").is_none());
    connect(&t, "a", 1);
    assert_eq!(t.successful_connects(), 9);
}

#[test]
fn a_connect_racing_the_removal_is_counted_when_the_last_reference_drops() {
    let t = RoutingTable::from_raw(&rows(&["a", "b"]), 0).unwrap();
    connect(&t, "a", 2);
    // A decision made on the old snapshot still holds `a`'s counters
    // after the reload forgot it (it had no reservation yet).
    let racing = t.snapshot().backend("a").unwrap().load.clone();
    t.apply(&rows(&["b"]), 0).unwrap();
    assert_eq!(t.successful_connects(), 2);
    racing.connect_stats().observe(Duration::from_micros(200));
    // Not visible while the straggler holds it (never counted twice)...
    assert_eq!(t.successful_connects(), 2);
    drop(racing);
    // ...and added once the last reference is gone.
    assert_eq!(t.successful_connects(), 3);
}

#[test]
fn a_reload_keeps_the_backends_it_does_not_change() {
    let t = RoutingTable::from_raw(&rows(&["a", "b", "c"]), 0).unwrap();
    let before = t.snapshot();
    let mut edited = rows(&["a", "b", "c", "d"]);
    edited.backends[1].weight = 5.into();
    let applied = t.apply(&edited, 1).unwrap();
    assert_eq!(applied.diff.changed, [BackendId::new("b")]);
    assert_eq!(applied.diff.added, [BackendId::new("d")]);
    let after = t.snapshot();
    for id in ["a", "c"] {
        assert!(Arc::ptr_eq(
            before.backend(id).unwrap(),
            after.backend(id).unwrap()
        ));
    }
    let (b0, b1) = (before.backend("b").unwrap(), after.backend("b").unwrap());
    assert_eq!(b1.weight, 5);
    assert!(Arc::ptr_eq(&b0.load, &b1.load), "b's counters carry");
    assert!(Arc::ptr_eq(
        &after.backend("d").unwrap().load,
        &t.loads.get("d").unwrap()
    ));
}

/// The ids the counter map holds, sorted.
fn load_ids(t: &RoutingTable) -> Vec<String> {
    let mut v: Vec<String> = t.loads.iter().map(|e| e.key().to_string()).collect();
    v.sort();
    v
}

fn outcome(r: &Result<Applied, Rejected>) -> Result<(u64, SnapshotDiff), Rejected> {
    r.as_ref()
        .map(|a| (a.generation, a.diff.clone()))
        .map_err(Clone::clone)
}

proptest::proptest! {
    /// Through random edits of random tables, with connections held and
    /// released across reloads, a table that keeps unchanged backends and
    /// one that rebuilds them all apply and refuse the same edits, with the
    /// same generations and diffs, serve the same snapshot, and keep the
    /// same counters: those of staying backends carried, those of removed
    /// ones kept while held and forgotten once idle.
    #[test]
    fn incremental_reloads_match_full_rebuilds(
        spec in arb_spec(),
        steps in proptest::collection::vec(
            (
                proptest::collection::vec(arb_edit(), 1..4),
                proptest::collection::vec(0..40usize, 0..3),
                0..3usize,
            ),
            1..10,
        ),
        own in proptest::prelude::any::<bool>(),
    ) {
        let mut spec = spec;
        let (inc, full) = (RoutingTable::new(), RoutingTable::new());
        if own {
            // 10.0.0.2:8081 is "one of this edge's listeners".
            let own = || OwnListener(Box::new(|a: SocketAddr| a == SocketAddr::from(([10, 0, 0, 2], 8081))));
            inc.refuse_backends_at(own());
            full.refuse_backends_at(own());
        }
        let mut held: Vec<(Arc<BackendLoad>, Arc<BackendLoad>)> = Vec::new();
        let first = (Vec::new(), Vec::new(), 0);
        for (now, (edits, hold, release)) in std::iter::once(first).chain(steps).enumerate() {
            for _ in 0..release.min(held.len()) {
                let (a, b) = held.remove(0);
                a.release();
                b.release();
            }
            let (si, sf) = (inc.snapshot(), full.snapshot());
            for k in hold {
                if si.is_empty() {
                    break;
                }
                let (a, b) = (&si.backends[k % si.len()], &sf.backends[k % sf.len()]);
                proptest::prop_assert_eq!(&a.id, &b.id);
                if a.load.try_acquire(a.hard_limit) {
                    proptest::prop_assert!(b.load.try_acquire(b.hard_limit));
                    a.load.connect_stats().observe(Duration::from_micros(100));
                    b.load.connect_stats().observe(Duration::from_micros(100));
                    held.push((Arc::clone(&a.load), Arc::clone(&b.load)));
                }
            }
            for e in &edits {
                spec.apply(e);
            }
            let raw = spec.raw();
            let generation = inc.generation();
            let (ri, rf) = (inc.apply(&raw, now as u64), full.apply_full(&raw, now as u64));
            proptest::prop_assert_eq!(outcome(&ri), outcome(&rf));
            assert_same(&inc.snapshot(), &full.snapshot(), |a, b| {
                a.active() == b.active()
                    && a.connect_stats().successes() == b.connect_stats().successes()
            });
            proptest::prop_assert_eq!(load_ids(&inc), load_ids(&full));
            for id in load_ids(&inc) {
                proptest::prop_assert_eq!(inc.active(&id), full.active(&id), "{}", id);
            }
            proptest::prop_assert_eq!(inc.successful_connects(), full.successful_connects());
            proptest::prop_assert_eq!(inc.generation(), full.generation());
            proptest::prop_assert_eq!(inc.stats().rejected_total(), full.stats().rejected_total());
            // After a change, the map holds the backends in service and
            // those removed that connections still hold, nothing else.
            if ri.is_ok_and(|a| a.generation > generation) {
                let s = inc.snapshot();
                for id in load_ids(&inc) {
                    proptest::prop_assert!(s.backend(&id).is_some() || inc.active(&id) > 0, "{} kept idle", id);
                }
                for b in &s.backends {
                    proptest::prop_assert!(inc.loads.contains_key(b.id.as_str()));
                }
            }
        }
    }
}

#[test]
fn subscribers_hear_every_change_in_order_and_nothing_else() {
    let t = RoutingTable::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&heard);
    t.subscribe(move |a| {
        sink.lock()
            .push((a.generation, a.diff.added.clone(), a.diff.removed.clone()));
        true
    });
    // A subscriber that wants only the first change.
    let once = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&once);
    t.subscribe(move |_| {
        count.fetch_add(1, Ordering::Relaxed);
        false
    });
    t.apply(&rows(&["a"]), 0).unwrap();
    t.apply_uncounted(&rows(&["a", "b"]), 0).unwrap();
    // Nothing changed: no event.
    t.apply(&rows(&["a", "b"]), 0).unwrap();
    // Refused: no event.
    let mut bad = rows(&["a"]);
    bad.backends[0].port = "x".into();
    t.apply(&bad, 0).unwrap_err();
    t.apply(&rows(&["b"]), 0).unwrap();
    let id = |s: &str| BackendId::new(s);
    assert_eq!(
        *heard.lock(),
        [
            (1, vec![id("a")], vec![]),
            (2, vec![id("b")], vec![]),
            (3, vec![], vec![id("a")]),
        ]
    );
    assert_eq!(once.load(Ordering::Relaxed), 1);
}

#[test]
fn an_edit_of_only_apps_or_sni_routes_is_applied_and_reported() {
    use crate::raw::{AppRow, SniRouteRow, Value};
    use crate::snapshot::AppLimits;

    let t = RoutingTable::new();
    let base = rows(&["a", "b"]);
    t.apply(&base, 0).unwrap();
    assert_eq!(t.generation(), 1);
    let before = t.snapshot();

    // apps only.
    let mut raw = base.clone();
    raw.apps.push(AppRow {
        rowid: 1,
        app: "default".into(),
        client_max_connections: 3.into(),
        client_rate: Value::Null,
        client_rate_period_seconds: 30.into(),
    });
    let applied = t.apply(&raw, 1).unwrap();
    assert_eq!(applied.generation, 2);
    assert_eq!(applied.diff.apps.added, 1);
    assert_eq!(applied.diff.to_string(), "+0 [] -0 [] ~0 [] apps: 1 added");
    let s = t.snapshot();
    assert_eq!(
        s.app_limits("default"),
        Some(&AppLimits {
            client_max_connections: Some(3),
            client_rate: None,
            client_rate_period: Some(Duration::from_secs(30)),
        })
    );
    assert_eq!(s.app_limits("other"), None);
    // The backends are kept as they were.
    assert!(Arc::ptr_eq(&s.backends[0], &before.backends[0]));

    // The same again: no change.
    assert_eq!(t.apply(&raw, 2).unwrap().generation, 2);

    // sni_routes only.
    raw.sni_routes = vec![
        SniRouteRow {
            rowid: 1,
            hostname: "*.example.com".into(),
            app: "default".into(),
        },
        SniRouteRow {
            rowid: 2,
            hostname: "api.example.com".into(),
            app: "default".into(),
        },
    ];
    let applied = t.apply(&raw, 3).unwrap();
    assert_eq!(applied.generation, 3);
    assert_eq!(
        applied.diff.to_string(),
        "+0 [] -0 [] ~0 [] sni_routes: 2 added"
    );
    let s = t.snapshot();
    assert_eq!(s.sni_routes_len(), 2);
    assert_eq!(
        s.sni_route("x.example.com").map(|a| a.as_str()),
        Some("default")
    );

    // A changed limit.
    raw.apps[0].client_max_connections = 0.into();
    let applied = t.apply(&raw, 4).unwrap();
    assert_eq!(
        applied.diff.to_string(),
        "+0 [] -0 [] ~0 [] apps: 1 changed"
    );
    assert_eq!(
        t.snapshot()
            .app_limits("default")
            .unwrap()
            .client_max_connections,
        Some(0)
    );

    // An invalid edit of either table is refused whole.
    let good = t.snapshot();
    let mut bad = raw.clone();
    bad.apps[0].client_rate_period_seconds = 0.into();
    bad.backends[0].weight = 7.into();
    let e = t.apply(&bad, 5).unwrap_err();
    assert_eq!(
        e.row_errors()[0].to_string(),
        "apps \"default\" column client_rate_period_seconds: 0 is outside 1..=86400"
    );
    let mut bad = raw.clone();
    bad.sni_routes[0].app = "ghost".into();
    bad.sni_routes[1].hostname = "API.example.com".into();
    let e = t.apply(&bad, 6).unwrap_err();
    let text: Vec<String> = e.row_errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "sni_routes \"*.example.com\" column app: unknown app \"ghost\"",
            "sni_routes \"API.example.com\" column hostname: \"API.example.com\" has upper-case letters: write it lower-case (\"api.example.com\")",
        ]
    );
    assert!(Arc::ptr_eq(&t.snapshot(), &good));
    assert_eq!(t.generation(), 4);

    // Removing the tables' rows is a change too.
    raw.apps.clear();
    raw.sni_routes.remove(0);
    let applied = t.apply(&raw, 7).unwrap();
    assert_eq!(
        applied.diff.to_string(),
        "+0 [] -0 [] ~0 [] apps: 1 removed sni_routes: 1 removed"
    );
    assert_eq!(t.snapshot().sni_route("x.example.com"), None);
}
