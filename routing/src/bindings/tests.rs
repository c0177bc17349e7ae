//! Property 4 (stickiness with TTL, bounded, prefix keys) on injected time.

// Tests read the clock once for an arbitrary base instant; the code under
// test never does.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn cfg(ttl: u64, max: usize) -> BindingConfig {
    BindingConfig {
        ttl: Duration::from_secs(ttl),
        max_entries: max,
        ..BindingConfig::default()
    }
}

fn app() -> AppId {
    AppId::new("default")
}

#[test]
fn peek_reports_a_binding_without_refreshing_or_promoting_it() {
    let t0 = Instant::now();
    let b = Bindings::new(BindingConfig {
        ipv4_prefix: 24,
        ..cfg(600, 100)
    });
    let ip: IpAddr = "203.0.113.7".parse().unwrap();
    // An app never bound is not found, and is not interned by the look-up.
    assert!(b.peek(&app(), ip, t0).is_none());
    assert!(b.apps.get(&app()).is_none());
    let k = b.key(&app(), ip);
    b.bind(k, BackendId::new("x"), t0);
    let seen = b.peek(
        &app(),
        "203.0.113.99".parse().unwrap(),
        t0 + Duration::from_secs(100),
    );
    assert_eq!(
        seen,
        Some(BindingInfo {
            backend: BackendId::new("x"),
            idle: Duration::from_secs(100),
            expires_in: Duration::from_secs(500),
            protected: false,
            network: ("203.0.113.0".parse().unwrap(), 24),
        })
    );
    // Peeking refreshed nothing: the binding still expires 600 s after its bind.
    assert!(b.peek(&app(), ip, t0 + Duration::from_secs(600)).is_none());
    assert!(b.lookup(&k, t0 + Duration::from_secs(600)).is_none());
    // Another app's client is another binding.
    assert!(b.peek(&AppId::new("other"), ip, t0).is_none());
}

#[test]
fn one_client_or_every_binding_can_be_cleared() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(600, 5000));
    for i in 0..3000u32 {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        b.bind(b.key(&app(), ip), BackendId::new("x"), t0);
    }
    assert_eq!(b.len(), 3000);
    let one: IpAddr = "10.0.0.5".parse().unwrap();
    assert_eq!(b.unbind_client(&app(), one).unwrap().as_str(), "x");
    assert!(b.unbind_client(&app(), one).is_none());
    assert!(b.unbind_client(&AppId::new("other"), one).is_none());
    assert_eq!(b.len(), 2999);
    assert_eq!(b.clear(), 2999);
    assert_eq!(b.len(), 0);
    assert!(b.peek(&app(), "10.0.0.6".parse().unwrap(), t0).is_none());
    // The table works on after a clear.
    let k = b.key(&app(), one);
    b.bind(k, BackendId::new("y"), t0);
    assert_eq!(b.lookup(&k, t0).unwrap().as_str(), "y");
    assert_eq!(b.len(), 1);
}

#[test]
fn binding_holds_until_idle_for_ttl_and_use_refreshes_it() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(600, 100));
    let k = b.key(&app(), "203.0.113.7".parse().unwrap());
    b.bind(k, BackendId::new("x"), t0);
    assert_eq!(
        b.lookup(&k, t0 + Duration::from_secs(599))
            .unwrap()
            .as_str(),
        "x"
    );
    // The lookup at 599 s refreshed it: still alive 599 s later.
    assert!(b.lookup(&k, t0 + Duration::from_secs(1198)).is_some());
    // Idle for the full TTL: gone.
    assert!(b.lookup(&k, t0 + Duration::from_secs(1798)).is_none());
    assert_eq!(b.stats().expirations.load(Ordering::Relaxed), 1);
    assert_eq!(b.len(), 0);
}

#[test]
fn keys_are_masked_to_the_configured_prefixes() {
    let b = Bindings::new(BindingConfig {
        ipv4_prefix: 24,
        ipv6_prefix: 64,
        ..BindingConfig::default()
    });
    let k = |s: &str| b.key(&app(), s.parse().unwrap());
    assert_eq!(k("198.51.100.1"), k("198.51.100.254"));
    assert_ne!(k("198.51.100.1"), k("198.51.101.1"));
    assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
    assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    // IPv4-mapped IPv6 is the IPv4 client.
    assert_eq!(k("::ffff:198.51.100.9"), k("198.51.100.1"));
    // Different apps never share a binding.
    assert_ne!(
        b.key(&AppId::new("api"), "198.51.100.1".parse().unwrap()),
        k("198.51.100.1")
    );
    // Defaults: /32 and /64.
    let d = Bindings::new(BindingConfig::default());
    assert_eq!(
        d.key(&app(), "2001:db8:1:2::1".parse().unwrap()),
        d.key(&app(), "2001:db8:1:2:ffff::9".parse().unwrap())
    );
    assert_ne!(
        d.key(&app(), "198.51.100.1".parse().unwrap()),
        d.key(&app(), "198.51.100.2".parse().unwrap())
    );
    assert_eq!(
        d.key(&app(), "198.51.100.1".parse().unwrap()).network().1,
        32
    );
}

#[test]
fn table_is_bounded_and_evicts_clients_seen_once_first() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(600, 4)); // one shard of 4
    let keys: Vec<_> = (1..=5u8)
        .map(|i| b.key(&app(), std::net::IpAddr::from([10, 0, 0, i])))
        .collect();
    for (i, k) in keys.iter().take(4).enumerate() {
        b.bind(*k, BackendId::new("x"), t0 + Duration::from_secs(i as u64));
    }
    // The first client comes back: no longer on probation.
    assert!(b.lookup(&keys[0], t0 + Duration::from_secs(10)).is_some());
    b.bind(keys[4], BackendId::new("y"), t0 + Duration::from_secs(11));
    assert_eq!(b.len(), 4);
    assert_eq!(b.stats().evictions.load(Ordering::Relaxed), 1);
    let later = t0 + Duration::from_secs(12);
    assert!(b.lookup(&keys[0], later).is_some());
    assert_eq!(b.lookup(&keys[4], later).unwrap().as_str(), "y");
    let kept = keys[1..4]
        .iter()
        .filter(|k| b.lookup(k, later).is_some())
        .count();
    assert_eq!(kept, 2, "one client seen once made room");
    // Rebinding an existing key replaces it without growing or evicting.
    b.bind(keys[0], BackendId::new("z"), t0 + Duration::from_secs(13));
    assert_eq!(b.len(), 4);
    assert_eq!(b.stats().evictions.load(Ordering::Relaxed), 1);
    assert_eq!(
        b.lookup(&keys[0], t0 + Duration::from_secs(14))
            .unwrap()
            .as_str(),
        "z"
    );
}

fn v6(net: u64, host: u64) -> std::net::IpAddr {
    std::net::IpAddr::from((u128::from(net) << 64 | u128::from(host)).to_be_bytes())
}

#[test]
fn ipv6_clients_are_keyed_by_their_64_by_default() {
    let b = Bindings::new(BindingConfig::default());
    assert_eq!(BindingConfig::default().ipv6_prefix, 64);
    let t0 = Instant::now();
    // One subscriber rotating through its /64: one binding.
    for host in 0..1000 {
        b.bind(
            b.key(&app(), v6(0x2001_0db8_0000_0001, host)),
            BackendId::new("x"),
            t0,
        );
    }
    assert_eq!(b.len(), 1);
    assert_ne!(
        b.key(&app(), v6(0x2001_0db8_0000_0001, 1)),
        b.key(&app(), v6(0x2001_0db8_0000_0002, 1))
    );
}

#[test]
fn second_connection_sticks_to_the_first_choice_through_a_flood() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(600, 1000));
    let client = b.key(&app(), "198.51.100.7".parse().unwrap());
    // First connection: routed and bound (on probation).
    b.bind(client, BackendId::new("first"), t0);
    // Second connection: sticky to the first choice, and now protected.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(b.lookup(&client, t1).unwrap().as_str(), "first");
    // Five tables' worth of new keys, each seen once.
    for i in 0..5000u32 {
        let k = b.key(
            &app(),
            std::net::IpAddr::from((0x0a00_0000 | i).to_be_bytes()),
        );
        b.bind(k, BackendId::new("flood"), t1 + Duration::from_secs(1));
    }
    assert!(b.len() <= 1000);
    assert!(b.stats().evictions.load(Ordering::Relaxed) >= 4000);
    let t2 = t1 + Duration::from_secs(2);
    assert_eq!(b.lookup(&client, t2).unwrap().as_str(), "first");
}

#[test]
fn a_flood_of_new_keys_does_not_evict_established_clients() {
    let t0 = Instant::now();
    let max = 100_000; // 64 shards
    let b = Bindings::new(cfg(600, max));
    // 20,000 established clients (well under any shard's protected room),
    // each connected twice.
    let established: Vec<_> = (0..20_000u64)
        .map(|i| b.key(&app(), v6(0x2001_0db8_0000_0000 | i, 1)))
        .collect();
    let backends: Vec<_> = (0..7).map(|i| BackendId::new(&format!("b{i}"))).collect();
    for (i, k) in established.iter().enumerate() {
        b.bind(*k, backends[i % 7].clone(), t0);
        assert!(b.lookup(k, t0).is_some());
    }
    // A flood of three tables' worth of new /64s, while the established
    // clients keep coming back now and then.
    let mut now = t0;
    for i in 0..(3 * max as u64) {
        if i % 1000 == 0 {
            now += Duration::from_secs(1);
        }
        let k = b.key(&app(), v6(0x2001_0db8_8000_0000 | i, 1));
        b.bind(k, BackendId::new("flood"), now);
        if i % 15 == 0 {
            let j = (i / 15) as usize % established.len();
            assert_eq!(
                b.lookup(&established[j], now),
                Some(backends[j % 7].clone())
            );
        }
    }
    assert!(b.len() <= max);
    assert!(b.stats().evictions.load(Ordering::Relaxed) > 2 * max as u64);
    for (i, k) in established.iter().enumerate() {
        assert_eq!(
            b.lookup(k, now),
            Some(backends[i % 7].clone()),
            "client {i}"
        );
    }
}

#[test]
fn expiry_gives_the_memory_back() {
    let t0 = Instant::now();
    let b = Bindings::new(BindingConfig::default());
    let empty = b.heap_bytes();
    for i in 0..50_000u64 {
        b.bind(
            b.key(&app(), v6(0x2001_0db8_0000_0000 | i, 1)),
            BackendId::new("x"),
            t0,
        );
    }
    let full = b.heap_bytes();
    assert!(
        full > empty + 50_000 * 28,
        "{full} bytes for 50,000 bindings"
    );
    assert!(
        full < empty + 50_000 * 64,
        "{full} bytes for 50,000 bindings"
    );
    let later = t0 + b.config().ttl;
    assert_eq!(b.sweep(later, usize::MAX), 50_000);
    assert!(b.is_empty());
    assert_eq!(
        b.heap_bytes(),
        empty,
        "all of it back once all have expired"
    );
}

#[test]
fn sweep_drops_only_expired_within_budget() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(100, 100_000));
    for i in 0..1000u32 {
        let k = b.key(&app(), std::net::IpAddr::from(i.to_be_bytes()));
        // Time only moves forward: half bound at t0, then half at t0+50 s.
        let at = if i < 500 {
            t0
        } else {
            t0 + Duration::from_secs(50)
        };
        b.bind(k, BackendId::new("x"), at);
    }
    let now = t0 + Duration::from_secs(120); // first half expired, second not
    assert_eq!(b.sweep(now, 100), 100);
    assert_eq!(b.len(), 900);
    assert_eq!(b.sweep(now, usize::MAX), 400);
    assert_eq!(b.len(), 500);
    assert_eq!(b.sweep(now, usize::MAX), 0);
    assert_eq!(b.stats().expirations.load(Ordering::Relaxed), 500);
}

proptest! {
    /// Against a plain model with room for everything: the table answers
    /// exactly like "bound and used less than TTL ago".
    #[test]
    fn matches_a_reference_model(ops in proptest::collection::vec((0..3u8, 0..16u8, 0..4u8, 0..400u64), 1..200)) {
        let t0 = Instant::now();
        let ttl = 100;
        let b = Bindings::new(cfg(ttl, 1 << 16));
        let mut model: HashMap<u8, (u8, u64)> = HashMap::new();
        let mut now = 0u64;
        for (op, client, backend, dt) in ops {
            now += dt % 60;
            let at = t0 + Duration::from_secs(now);
            let k = b.key(&app(), std::net::IpAddr::from([192, 0, 2, client]));
            match op {
                0 => {
                    b.bind(k, BackendId::new(&backend.to_string()), at);
                    model.insert(client, (backend, now));
                }
                1 => {
                    let expect = match model.get(&client) {
                        Some(&(be, last)) if now - last < ttl => Some(be),
                        _ => None,
                    };
                    let got = b.lookup(&k, at).map(|id| id.as_str().parse::<u8>().unwrap());
                    prop_assert_eq!(got, expect);
                    match expect {
                        Some(be) => { model.insert(client, (be, now)); }
                        None => { model.remove(&client); }
                    }
                }
                _ => {
                    b.sweep(at, usize::MAX);
                    model.retain(|_, &mut (_, last)| now - last < ttl);
                    prop_assert_eq!(b.len(), model.len());
                }
            }
        }
    }
}

proptest! {
    /// A full table under a flood of keys seen once keeps every client that
    /// was seen twice (up to the protected room) on its backend.
    #[test]
    fn returning_clients_survive_any_flood(
        max in 8usize..1024,
        established in 1usize..600,
        flood in 1usize..4,
        every in 1usize..50,
        seed in any::<u32>(),
    ) {
        let t0 = Instant::now();
        let b = Bindings::new(cfg(600, max)); // one shard
        let established = established.min(max - max.div_ceil(4));
        let keys: Vec<_> = (0..established as u32)
            .map(|i| b.key(&app(), std::net::IpAddr::from((0x0a00_0000 | i).to_be_bytes())))
            .collect();
        let backend = |i: usize| BackendId::new(&((i as u32 ^ seed) % 5).to_string());
        for (i, k) in keys.iter().enumerate() {
            b.bind(*k, backend(i), t0);
            prop_assert_eq!(b.lookup(k, t0), Some(backend(i)));
        }
        for i in 0..(flood * max + 1) as u32 {
            let k = b.key(&app(), std::net::IpAddr::from((0xc000_0000 | i ^ seed).to_be_bytes()));
            b.bind(k, BackendId::new("flood"), t0);
            prop_assert!(b.len() <= max);
            if (i as usize).is_multiple_of(every) {
                let j = i as usize % established;
                prop_assert_eq!(b.lookup(&keys[j], t0), Some(backend(j)));
            }
        }
        for (i, k) in keys.iter().enumerate() {
            prop_assert_eq!(b.lookup(k, t0), Some(backend(i)));
        }
    }

    /// Under evictions, promotions and demotions in a small full table, a
    /// lookup answers the client's last backend or nothing (never another
    /// client's), and the count matches what the table holds.
    #[test]
    fn never_answers_a_wrong_backend_under_eviction(
        max in 1usize..24,
        ops in proptest::collection::vec((0..4u8, 0..48u8, 0..4u8, 0..3u64), 1..400),
    ) {
        let t0 = Instant::now();
        let ttl = 100;
        let b = Bindings::new(cfg(ttl, max));
        let mut last: HashMap<u8, u8> = HashMap::new();
        let mut now = 0u64;
        for (op, client, backend, dt) in ops {
            now += dt * 20;
            let at = t0 + Duration::from_secs(now);
            let k = b.key(&app(), std::net::IpAddr::from([192, 0, 2, client]));
            match op {
                0 | 1 => {
                    b.bind(k, BackendId::new(&backend.to_string()), at);
                    last.insert(client, backend);
                }
                2 => {
                    if let Some(got) = b.lookup(&k, at) {
                        let got: u8 = got.as_str().parse().unwrap();
                        prop_assert_eq!(Some(&got), last.get(&client));
                    }
                }
                _ => {
                    if op == 3 && backend == 0 {
                        b.unbind(&k);
                    } else {
                        b.sweep(at, usize::MAX);
                    }
                }
            }
            let held: usize = b.shards.iter().map(|s| s.lock().len()).sum();
            prop_assert_eq!(b.len(), held);
            prop_assert!(held <= max);
            let protected: usize = b.shards.iter().map(|s| s.lock().protected_len()).sum();
            prop_assert!(protected < max.max(2));
        }
    }
}

fn exported(b: &Bindings, now: Instant) -> Vec<ExportedBinding> {
    let mut all: Vec<ExportedBinding> = b.export(now).flatten().collect();
    all.sort_by_key(|e| (e.client, e.app.as_str().to_owned()));
    all
}

#[test]
fn a_table_handed_over_keeps_each_clients_backend_idle_time_and_segment() {
    let t0 = Instant::now();
    let old = Bindings::new(cfg(600, 10_000));
    for i in 0..300u32 {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0xcb00_7100 + i));
        let k = old.key(&app(), ip);
        old.bind(k, BackendId::new(&format!("be{}", i % 3)), t0);
        if i % 2 == 0 {
            // Seen again 100 s later: protected.
            old.lookup(&k, t0 + Duration::from_secs(100));
        }
    }
    let v6 = old.key(&AppId::new("api"), "2001:db8:1:2::9".parse().unwrap());
    old.bind(v6, BackendId::new("be6"), t0 + Duration::from_secs(50));
    let at = t0 + Duration::from_secs(200);
    let dump = exported(&old, at);
    assert_eq!(dump.len(), 301);
    let first = dump
        .iter()
        .find(|e| e.client == "203.0.113.0".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!(first.backend.as_str(), "be0");
    assert!(first.protected);
    assert_eq!(first.idle, Duration::from_secs(100));
    let v6e = dump.iter().find(|e| e.app.as_str() == "api").unwrap();
    assert_eq!(v6e.client, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
    assert_eq!(v6e.idle, Duration::from_secs(150));
    assert!(!v6e.protected);

    // A new table, in another process: a later clock.
    let t1 = at + Duration::from_secs(3);
    let new = Bindings::new(cfg(600, 10_000));
    assert_eq!(dump.iter().filter(|e| new.import(e, t1)).count(), 301);
    assert_eq!(new.len(), 301);
    for i in 0..300u32 {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0xcb00_7100 + i));
        let k = new.key(&app(), ip);
        assert_eq!(new.lookup(&k, t1).unwrap().as_str(), format!("be{}", i % 3));
    }
    // Idle time carried over: the IPv6 client, idle 150 s at export, is
    // gone 450 s after the import, not 600.
    let k6 = new.key(&AppId::new("api"), "2001:db8:1:2::1".parse().unwrap());
    assert!(new.lookup(&k6, t1 + Duration::from_secs(449)).is_some());
    let fresh = Bindings::new(cfg(600, 10_000));
    fresh.import(v6e, t1);
    assert!(fresh.lookup(&k6, t1 + Duration::from_secs(450)).is_none());
}

#[test]
fn an_import_never_replaces_evicts_or_revives() {
    let t0 = Instant::now();
    let new = Bindings::new(cfg(60, 2));
    let k = new.key(&app(), "198.51.100.1".parse().unwrap());
    new.bind(k, BackendId::new("mine"), t0);
    let theirs = |ip: &str, idle: u64| ExportedBinding {
        app: app(),
        client: ip.parse().unwrap(),
        backend: BackendId::new("theirs"),
        idle: Duration::from_secs(idle),
        protected: true,
    };
    // Bound here already: kept.
    assert!(!new.import(&theirs("198.51.100.1", 0), t0));
    assert_eq!(new.lookup(&k, t0).unwrap().as_str(), "mine");
    // Idle for this table's TTL: dropped.
    assert!(!new.import(&theirs("198.51.100.2", 60), t0));
    assert!(new.import(&theirs("198.51.100.3", 59), t0));
    // Full (two entries): nothing more, nobody evicted.
    assert!(!new.import(&theirs("198.51.100.4", 0), t0));
    assert_eq!(new.len(), 2);
    assert_eq!(new.stats().evictions.load(Ordering::Relaxed), 0);
    // Expired bindings are not exported.
    assert!(exported(&new, t0 + Duration::from_secs(1)).len() == 2);
    assert!(exported(&new, t0 + Duration::from_secs(61)).is_empty());
}
