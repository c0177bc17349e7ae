//! The client table against its documented rules: concurrency caps, the
//! sliding-window rate (its exact instants), eviction and generations,
//! limits that change between calls, threads, and a reference model.
//! No test reads the clock for a decision: each passes `now` itself.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// An arbitrary base instant; every test derives its times from it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const NS: Duration = Duration::from_nanos(1);

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn rate(count: u32, period: Duration) -> Option<Rate> {
    Some(Rate { count, period })
}

fn cap(n: u32) -> Limits {
    Limits {
        max_connections: Some(n),
        rate: None,
    }
}

fn rated(count: u32, period: Duration) -> Limits {
    Limits {
        max_connections: None,
        rate: rate(count, period),
    }
}

/// A table of `capacity` clients, 64 shards: tests keep it far above the
/// clients they use, so that two of them never share a one-entry shard
/// (and one evicts the other) whatever the per-process hash seed.
fn table(capacity: usize) -> Arc<ClientTable<IpAddr>> {
    Arc::new(ClientTable::new(capacity))
}

// ---- Rate, Refused, Limits, mask ----

#[test]
fn rate_parses_the_documented_forms() {
    let cases = [
        ("10/60s", 10, secs(60)),
        ("100/1m", 100, secs(60)),
        ("5/1s", 5, secs(1)),
        ("20/500ms", 20, Duration::from_millis(500)),
        ("3/2h", 3, secs(7200)),
        (" 7 / 90s ", 7, secs(90)),
    ];
    for (s, count, period) in cases {
        assert_eq!(s.parse::<Rate>(), Ok(Rate { count, period }), "{s}");
    }
}

#[test]
fn rate_errors_say_what_is_wrong() {
    let err = |s: &str| s.parse::<Rate>().unwrap_err();
    assert!(matches!(err("10"), ParseRateError::Format(_)));
    assert!(matches!(err("ten/1s"), ParseRateError::Count { .. }));
    assert!(matches!(err("-1/1s"), ParseRateError::Count { .. }));
    assert!(matches!(err("+1/1s"), ParseRateError::Count { .. }));
    assert!(matches!(
        err("99999999999/1s"),
        ParseRateError::Count { .. }
    ));
    assert!(matches!(err("/1s"), ParseRateError::Count { .. }));
    assert!(matches!(err("0/1s"), ParseRateError::ZeroCount(_)));
    assert!(matches!(err("10/"), ParseRateError::Period { .. }));
    assert!(matches!(err("10/soon"), ParseRateError::Period { .. }));
    assert!(matches!(err("10/60"), ParseRateError::Period { .. }));
    assert!(matches!(err("10/0s"), ParseRateError::ZeroPeriod(_)));
    let message = err("10/60x").to_string();
    assert!(
        message.contains("\"60x\"") && message.contains("10/60x"),
        "{message}"
    );
    assert!(err("0/1s").to_string().contains("at least 1"));
    assert!(err("1/0ms").to_string().contains("longer than zero"));
}

#[test]
fn rate_displays_as_it_was_written() {
    for s in [
        "10/60s",
        "20/500ms",
        "5/1s",
        "1/1500us",
        "2/7ns",
        "100/3600s",
    ] {
        assert_eq!(s.parse::<Rate>().unwrap().to_string(), s);
    }
    assert_eq!("100/1m".parse::<Rate>().unwrap().to_string(), "100/60s");
    assert_eq!("1/1m 30s".parse::<Rate>().unwrap().to_string(), "1/90s");
}

proptest! {
    #[test]
    fn rate_round_trips(count in 1u32.., nanos in 1u64..u64::MAX / 4) {
        let r = Rate { count, period: Duration::from_nanos(nanos) };
        prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
    }

    #[test]
    fn rate_parse_never_panics(s in ".{0,24}") {
        let _ = s.parse::<Rate>();
    }
}

#[test]
fn rate_new_refuses_zeros() {
    assert_eq!(Rate::new(0, secs(1)), None);
    assert_eq!(Rate::new(1, Duration::ZERO), None);
    assert_eq!(Rate::new(2, secs(3)), rate(2, secs(3)));
}

#[test]
fn refused_labels() {
    assert_eq!(Refused::Connections.as_str(), "client_limit");
    assert_eq!(Refused::Rate.as_str(), "client_rate");
}

#[test]
fn limits_none() {
    assert!(Limits::default().is_none());
    assert!(Limits::NONE.is_none());
    assert!(!cap(1).is_none());
    assert!(!rated(1, secs(1)).is_none());
}

#[test]
fn mask_prefixes() {
    let a: IpAddr = "192.0.2.77".parse().unwrap();
    assert_eq!(mask(a, 24, 64), "192.0.2.0".parse::<IpAddr>().unwrap());
    assert_eq!(mask(a, 32, 64), a);
    assert_eq!(mask(a, 40, 64), a);
    assert_eq!(mask(a, 0, 64), "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(mask(a, 1, 64), "128.0.0.0".parse::<IpAddr>().unwrap());
    let mapped: IpAddr = "::ffff:192.0.2.77".parse().unwrap();
    assert_eq!(mask(mapped, 24, 64), "192.0.2.0".parse::<IpAddr>().unwrap());
    assert_eq!(mask(mapped, 32, 128), a);
    let b: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
    assert_eq!(mask(b, 24, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    assert_eq!(mask(b, 24, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
    assert_eq!(mask(b, 24, 128), b);
    assert_eq!(mask(b, 24, 200), b);
    assert_eq!(mask(b, 24, 0), "::".parse::<IpAddr>().unwrap());
}

// ---- Concurrency ----

#[test]
fn one_client_over_its_cap_while_others_are_admitted() {
    let table = table(1024);
    let now = t0();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(table.admit(ip(1), cap(3), now).unwrap());
    }
    assert_eq!(
        table.admit(ip(1), cap(3), now).unwrap_err(),
        Refused::Connections
    );
    for i in 2..50 {
        held.push(table.admit(ip(i), cap(3), now).unwrap());
    }
    assert_eq!(
        table.admit(ip(1), cap(3), now).unwrap_err(),
        Refused::Connections
    );
    assert_eq!(table.open_connections(&ip(1)), 3);
    // A raised cap admits; a lowered one refuses until enough close.
    held.push(table.admit(ip(1), cap(4), now).unwrap());
    assert_eq!(table.open_connections(&ip(1)), 4);
    assert_eq!(
        table.admit(ip(1), cap(2), now).unwrap_err(),
        Refused::Connections
    );
}

#[test]
fn dropping_a_guard_frees_a_place() {
    let table = table(4096);
    let now = t0();
    let a = table.admit(ip(1), cap(2), now).unwrap();
    let _b = table.admit(ip(1), cap(2), now).unwrap();
    assert!(table.admit(ip(1), cap(2), now).is_err());
    drop(a);
    assert_eq!(table.open_connections(&ip(1)), 1);
    let _c = table.admit(ip(1), cap(2), now).unwrap();
    assert!(table.admit(ip(1), cap(2), now).is_err());
}

#[test]
fn a_client_without_rate_leaves_when_its_last_connection_closes() {
    let table = table(4096);
    let now = t0();
    let a = table.admit(ip(1), cap(2), now).unwrap();
    let b = table.admit(ip(1), cap(2), now).unwrap();
    assert_eq!(table.len(), 1);
    drop(a);
    assert_eq!(table.len(), 1);
    drop(b);
    assert_eq!(table.len(), 0);
    // With a rate, the entry stays for its history.
    drop(table.admit(ip(2), rated(5, secs(1)), now).unwrap());
    assert_eq!(table.len(), 1);
    assert_eq!(table.open_connections(&ip(2)), 0);
}

#[test]
fn a_refused_unknown_client_leaves_nothing() {
    let table = table(4096);
    let now = t0();
    assert_eq!(
        table.admit(ip(1), cap(0), now).unwrap_err(),
        Refused::Connections
    );
    let zero = Limits {
        max_connections: None,
        rate: Some(Rate {
            count: 0,
            period: secs(1),
        }),
    };
    assert_eq!(table.admit(ip(1), zero, now).unwrap_err(), Refused::Rate);
    assert_eq!(table.len(), 0);
}

#[test]
fn the_cap_is_checked_before_the_rate() {
    let table = table(4096);
    let now = t0();
    let both = Limits {
        max_connections: Some(1),
        rate: rate(1, secs(60)),
    };
    let _a = table.admit(ip(1), both, now).unwrap();
    assert_eq!(
        table.admit(ip(1), both, now).unwrap_err(),
        Refused::Connections
    );
}

#[test]
fn no_limits_is_inert() {
    let table = table(4096);
    let now = t0();
    let g = table.admit(ip(1), Limits::NONE, now).unwrap();
    assert!(!g.is_counted());
    assert_eq!(g.key(), &ip(1));
    assert_eq!(table.len(), 0);
    assert_eq!(table.open_connections(&ip(1)), 0);
    let counted = table.admit(ip(1), cap(1), now).unwrap();
    assert!(counted.is_counted());
    drop(g);
    assert_eq!(table.open_connections(&ip(1)), 1);
    drop(counted);
    assert_eq!(table.len(), 0);
}

#[test]
fn a_guard_outlives_its_table() {
    let table = table(4096);
    let g = table.admit(ip(1), cap(1), t0()).unwrap();
    drop(table);
    drop(g);
}

#[test]
fn guards_are_small_and_sendable() {
    fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<ClientGuard<IpAddr>>();
    send_sync_static::<ClientTable<IpAddr>>();
    assert!(std::mem::size_of::<ClientGuard<IpAddr>>() <= 40);
    assert!(std::mem::size_of::<ClientGuard<u64>>() <= 24);
}

#[test]
fn concurrent_admits_never_exceed_the_cap() {
    let table = table(1024);
    let now = t0();
    let live = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (table, live, most) = (table.clone(), live.clone(), most.clone());
            std::thread::spawn(move || {
                let mut admitted = 0u32;
                for i in 0..20_000u32 {
                    // Other clients in between, on the same and other shards.
                    let _other = table.admit(ip(1000 + (i + t) % 97), cap(2), now);
                    if let Ok(g) = table.admit(ip(1), cap(5), now) {
                        let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        assert!(n <= 5, "{n} connections open for one client");
                        admitted += 1;
                        if i % 7 == 0 {
                            std::thread::yield_now();
                        }
                        live.fetch_sub(1, Ordering::SeqCst);
                        drop(g);
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted > 0);
    assert!(most.load(Ordering::SeqCst) <= 5);
    assert_eq!(table.open_connections(&ip(1)), 0);
    assert_eq!(table.len(), 0, "every entry without rate state went");
}

// ---- Rate ----

/// Admits `n` connections of `key` at `now` (dropping each guard), failing
/// the test if one is refused.
fn burst(table: &Arc<ClientTable<IpAddr>>, key: IpAddr, limits: Limits, now: Instant, n: u32) {
    for i in 0..n {
        assert!(
            table.admit(key, limits, now).is_ok(),
            "connection {i} of the burst"
        );
    }
}

#[test]
fn a_burst_is_refused_then_refills_at_the_documented_instants() {
    let table = table(4096);
    let start = t0();
    let r = rated(10, secs(60));
    burst(&table, ip(1), r, start, 10);
    assert_eq!(table.admit(ip(1), r, start).unwrap_err(), Refused::Rate);
    // Other clients are not affected.
    burst(&table, ip(2), r, start, 10);
    assert!(table.admit(ip(1), r, start + secs(30)).is_err());
    assert!(table.admit(ip(1), r, start + secs(60)).is_err());
    // Refused at `start` (its window's first instant, full): admitted just
    // after `start + period`.
    assert!(table.admit(ip(1), r, start + secs(60) + NS).is_ok());
    // Then one per period / count: 10 * (60s - e) + 60s * k < 600s.
    for k in 1..10u64 {
        let at = start + secs(60 + 6 * k);
        assert_eq!(table.admit(ip(1), r, at).unwrap_err(), Refused::Rate, "{k}");
        assert!(table.admit(ip(1), r, at + NS).is_ok(), "{k}");
    }
    // The refill ends where the previous window has slid out.
    assert!(table.admit(ip(1), r, start + secs(119)).is_err());
}

#[test]
fn refused_mid_window_is_admitted_after_a_period() {
    let table = table(4096);
    let start = t0();
    let r = rated(4, secs(10));
    burst(&table, ip(1), r, start + secs(2), 4);
    let t = start + secs(3);
    assert_eq!(table.admit(ip(1), r, t).unwrap_err(), Refused::Rate);
    // The window started at start + 2s; at start + 12s + 1ns the burst's
    // window is the previous one, weighted (10s - 1ns) / 10s: 4 * that < 4.
    assert!(table.admit(ip(1), r, start + secs(12)).is_err());
    assert!(table.admit(ip(1), r, start + secs(12) + NS).is_ok());
}

#[test]
fn a_long_silence_forgets_everything() {
    let table = table(4096);
    let start = t0();
    let r = rated(3, secs(1));
    burst(&table, ip(1), r, start, 3);
    assert!(table.admit(ip(1), r, start).is_err());
    burst(&table, ip(1), r, start + secs(2), 3);
    assert!(table.admit(ip(1), r, start + secs(2)).is_err());
    burst(&table, ip(1), r, start + secs(1000) + NS * 7, 3);
}

#[test]
fn a_rate_with_a_zero_period_is_no_limit() {
    let table = table(4096);
    let r = rated(1, Duration::ZERO);
    burst(&table, ip(1), r, t0(), 100);
    assert_eq!(table.len(), 0);
}

#[test]
fn an_earlier_now_counts_as_the_window_start() {
    let table = table(4096);
    let start = t0() + secs(10);
    let r = rated(2, secs(1));
    burst(&table, ip(1), r, start, 2);
    assert!(table.admit(ip(1), r, start - secs(5)).is_err());
    assert!(table.admit(ip(1), r, start + secs(1) + NS).is_ok());
}

#[test]
fn a_changed_count_keeps_the_counts() {
    let table = table(4096);
    let start = t0();
    burst(&table, ip(1), rated(5, secs(60)), start, 5);
    assert!(table.admit(ip(1), rated(5, secs(60)), start).is_err());
    burst(&table, ip(1), rated(8, secs(60)), start, 3);
    assert!(table.admit(ip(1), rated(8, secs(60)), start).is_err());
    assert!(table
        .admit(ip(1), rated(2, secs(60)), start + secs(30))
        .is_err());
}

#[test]
fn a_changed_period_carries_the_sliding_count() {
    let table = table(4096);
    let start = t0();
    burst(&table, ip(1), rated(10, secs(60)), start, 10);
    // At start + 90s the sliding count under 60s is 10 * 30/60 = 5. Moving
    // to 10/20s: the new window starts at start + 90s with a previous count
    // of 5; so 5 more now, then refused.
    let at = start + secs(90);
    let r = rated(10, secs(20));
    burst(&table, ip(1), r, at, 5);
    assert_eq!(table.admit(ip(1), r, at).unwrap_err(), Refused::Rate);
    // Rounded up: 10 * 15/60 = 2.5 carries as 3 under 4/5s, so one more.
    let table = self::table(4096);
    burst(&table, ip(1), rated(10, secs(60)), start, 10);
    let at = start + secs(105);
    burst(&table, ip(1), rated(4, secs(5)), at, 1);
    assert!(table.admit(ip(1), rated(4, secs(5)), at).is_err());
}

#[test]
fn a_rate_that_goes_away_drops_the_history() {
    let table = table(4096);
    let start = t0();
    let r = rated(2, secs(60));
    burst(&table, ip(1), r, start, 2);
    assert!(table.admit(ip(1), r, start).is_err());
    let g = table.admit(ip(1), cap(5), start).unwrap();
    burst(&table, ip(1), r, start, 2);
    drop(g);
    assert_eq!(table.len(), 1);
    drop(table.admit(ip(1), cap(5), start).unwrap());
    assert_eq!(table.len(), 0);
}

// ---- Bounds and eviction ----

#[test]
fn capacity_rounds_up_to_the_shards() {
    assert_eq!(ClientTable::<IpAddr>::new(0).capacity(), 64);
    assert_eq!(ClientTable::<IpAddr>::new(1000).capacity(), 1024);
    assert_eq!(ClientTable::<IpAddr>::new(6400).capacity(), 6400);
    let t = ClientTable::<IpAddr>::with_shards(10, 3);
    assert_eq!((t.shards(), t.capacity()), (4, 12));
    let t = ClientTable::<IpAddr>::with_shards(10, 0);
    assert_eq!((t.shards(), t.capacity()), (1, 10));
    assert_eq!(
        ClientTable::<IpAddr>::with_shards(1, 1 << 20).shards(),
        MAX_SHARDS
    );
}

#[test]
fn clients_spread_over_the_shards() {
    let table = ClientTable::<IpAddr>::new(1 << 20);
    let mut per_shard = [0u32; DEFAULT_SHARDS];
    // Consecutive addresses, the worst case for a weak hash: about 100 each
    // (a standard deviation of 10; the bounds are 5 of them).
    for i in 0..6400 {
        let hash = table.hasher.hash_one(ip(i));
        let cell = table.shard_of(hash);
        let index = table.shards.iter().position(|c| Arc::ptr_eq(c, cell));
        per_shard[index.unwrap()] += 1;
    }
    assert!(
        per_shard.iter().all(|&n| (50..=150).contains(&n)),
        "{per_shard:?}"
    );
}

#[test]
fn many_distinct_clients_stay_within_capacity() {
    let table = table(1000);
    let start = t0();
    let r = rated(5, secs(60));
    for i in 0..100_000u32 {
        drop(table.admit(ip(i), r, start).unwrap());
        if i % 4096 == 0 {
            assert!(table.len() <= table.capacity());
        }
    }
    assert!(table.len() <= table.capacity());
    assert!(table.len() > table.capacity() / 2, "{}", table.len());
    assert_eq!(table.evictions(), 100_000 - table.len() as u64);
    // Still working: a recent client is held with its count.
    for _ in 0..4 {
        assert!(table.admit(ip(99_999), r, start).is_ok());
    }
    assert!(table.admit(ip(99_999), r, start).is_err());
}

#[test]
fn eviction_prefers_clients_without_open_connections() {
    let table = Arc::new(ClientTable::with_shards(3, 1));
    let now = t0();
    let r = rated(100, secs(60));
    let held = table.admit(ip(1), r, now).unwrap();
    drop(table.admit(ip(2), r, now).unwrap());
    let _held3 = table.admit(ip(3), r, now).unwrap();
    // 1 is the least recently used but has a connection open: 2 goes.
    let _g4 = table.admit(ip(4), r, now).unwrap();
    assert_eq!(table.evictions(), 1);
    assert_eq!(table.open_connections(&ip(1)), 1);
    assert_eq!(table.open_connections(&ip(2)), 0);
    let shard = table.shards[0].shard.lock();
    assert!(shard.map.contains_key(&ip(1)) && !shard.map.contains_key(&ip(2)));
    drop(shard);
    drop(held);
}

#[test]
fn evicting_open_connections_never_corrupts_a_later_entry() {
    let table = Arc::new(ClientTable::with_shards(2, 1));
    let now = t0();
    let limits = Limits {
        max_connections: Some(2),
        rate: rate(100, secs(60)),
    };
    let old_a = table.admit(ip(1), limits, now).unwrap();
    let _b = table.admit(ip(2), limits, now).unwrap();
    // Every entry has a connection open: the least recently used (1) goes.
    let _c = table.admit(ip(3), limits, now).unwrap();
    assert_eq!(table.open_connections(&ip(1)), 0);
    // 1 comes back as a new entry (evicting 2), with one connection.
    let new_a = table.admit(ip(1), limits, now).unwrap();
    assert_eq!(table.open_connections(&ip(1)), 1);
    // The old guard's drop leaves the new entry alone.
    drop(old_a);
    assert_eq!(table.open_connections(&ip(1)), 1);
    let new_a2 = table.admit(ip(1), limits, now).unwrap();
    assert_eq!(
        table.admit(ip(1), limits, now).unwrap_err(),
        Refused::Connections
    );
    drop(new_a);
    drop(new_a2);
    assert_eq!(table.open_connections(&ip(1)), 0);
    assert_eq!(table.evictions(), 2);
}

// ---- Properties ----

/// One step of a client's life.
#[derive(Debug, Clone)]
enum Op {
    Admit,
    /// Drops the held guard at this index (modulo the number held).
    Drop(usize),
    /// Moves the clock forward by this many nanoseconds.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Admit),
        2 => any::<usize>().prop_map(Op::Drop),
        3 => (0u64..40).prop_map(Op::Advance),
    ]
}

/// The documented rules for one client, computed from the list of its
/// admissions rather than from rolling counters.
struct Model {
    max_connections: Option<u32>,
    /// `(count, period)`, the period in nanoseconds.
    rate: Option<(u32, u64)>,
    open: u32,
    /// Admission times, in nanoseconds after the base instant.
    admitted: Vec<u64>,
}

impl Model {
    fn admit(&mut self, now: u64) -> Result<(), Refused> {
        if self.max_connections.is_some_and(|max| self.open >= max) {
            return Err(Refused::Connections);
        }
        if let Some((count, period)) = self.rate {
            if let Some(&origin) = self.admitted.first() {
                let window = (now - origin) / period;
                let e = (now - origin) % period;
                let in_window = |w: u64| {
                    self.admitted
                        .iter()
                        .filter(|&&t| (t - origin) / period == w)
                        .count() as u128
                };
                let cur = in_window(window);
                let prev = if window > 0 { in_window(window - 1) } else { 0 };
                let scaled = prev * u128::from(period - e) + cur * u128::from(period);
                if scaled >= u128::from(count) * u128::from(period) {
                    return Err(Refused::Rate);
                }
            }
            self.admitted.push(now);
        }
        self.open += 1;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A single client against the reference model.
    #[test]
    fn one_client_matches_the_model(
        max_connections in proptest::option::of(0u32..4),
        rate in proptest::option::of((1u32..5, 1u64..30)),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let limits = Limits {
            max_connections,
            rate: rate.map(|(count, period)| Rate { count, period: Duration::from_nanos(period) }),
        };
        let mut model = Model { max_connections, rate, open: 0, admitted: Vec::new() };
        let table = table(16);
        let base = t0();
        let mut now = 0u64;
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Admit => {
                    let got = table.admit(ip(7), limits, base + Duration::from_nanos(now));
                    let want = model.admit(now);
                    prop_assert_eq!(got.as_ref().map(|_| ()).map_err(|e| *e), want, "at {}", now);
                    if let Ok(g) = got {
                        held.push(g);
                    }
                }
                Op::Drop(i) if !held.is_empty() => {
                    held.swap_remove(i % held.len());
                    model.open -= 1;
                }
                Op::Drop(_) => {}
                Op::Advance(d) => now += d,
            }
            let counted = if limits.is_none() { 0 } else { model.open };
            prop_assert_eq!(table.open_connections(&ip(7)), counted);
        }
    }

    /// The documented re-admission rule, at every refusal of a random
    /// history: admitted at any instant after `t + period`, and at
    /// `t + period` unless `t` opened a full window.
    #[test]
    fn refused_at_t_is_admitted_after_a_period(
        count in 1u32..6,
        period in 1u64..50,
        steps in proptest::collection::vec((0u64..30, 1u32..4), 1..60),
        later in 1u64..200,
    ) {
        let limits = rated(count, Duration::from_nanos(period));
        let base = t0();
        let mut entry = Entry { generation: 1, open: 0, window: None };
        let mut now = 0u64;
        for (advance, attempts) in steps {
            now += advance;
            let at = base + Duration::from_nanos(now);
            for _ in 0..attempts {
                if entry.admit(&limits, at).is_ok() {
                    continue;
                }
                let mut window = entry.window.unwrap();
                let e = window.roll(at);
                let opened_full = e == 0 && window.cur >= count;
                let mut after = entry.clone();
                prop_assert!(after
                    .admit(&limits, at + Duration::from_nanos(period + later))
                    .is_ok());
                let mut just = entry.clone();
                let at_period = just.admit(&limits, at + Duration::from_nanos(period));
                prop_assert_eq!(at_period.is_err(), opened_full);
            }
        }
    }

    /// Several clients in a tiny table, with limits that change at every
    /// call: nothing panics, and each entry's count is exactly its live
    /// guards of its generation, however entries were evicted.
    #[test]
    fn counts_stay_exact_through_eviction_and_changing_limits(
        steps in proptest::collection::vec(
            (0u32..6, proptest::option::of(0u32..4), proptest::option::of((1u32..4, 1u64..20)), 0u64..15, any::<usize>(), any::<bool>()),
            1..200,
        ),
    ) {
        let table = Arc::new(ClientTable::with_shards(3, 1));
        let base = t0();
        let mut now = 0u64;
        let mut held: Vec<ClientGuard<IpAddr>> = Vec::new();
        for (key, max_connections, rate, advance, pick, admit) in steps {
            now += advance;
            if admit || held.is_empty() {
                let limits = Limits {
                    max_connections,
                    rate: rate.map(|(count, period)| Rate { count, period: Duration::from_nanos(period) }),
                };
                if let Ok(g) = table.admit(ip(key), limits, base + Duration::from_nanos(now)) {
                    held.push(g);
                }
            } else {
                held.swap_remove(pick % held.len());
            }
            prop_assert!(table.len() <= table.capacity());
            let shard = table.shards[0].shard.lock();
            let mut live: HashMap<(IpAddr, u64), u32> = HashMap::new();
            for g in held.iter().filter(|g| g.is_counted()) {
                *live.entry((g.key, g.generation)).or_default() += 1;
            }
            for (key, entry) in shard.map.iter() {
                let want = live.get(&(*key, entry.generation)).copied().unwrap_or(0);
                prop_assert_eq!(entry.open, want, "{}", key);
                prop_assert!(entry.open > 0 || entry.window.is_some(), "{} held for nothing", key);
            }
        }
        drop(held);
        for (_, entry) in table.shards[0].shard.lock().map.iter() {
            prop_assert_eq!(entry.open, 0);
        }
    }
}
