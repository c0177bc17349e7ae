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
fn binding_holds_until_idle_for_ttl_and_use_refreshes_it() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(600, 100));
    let k = b.key(&app(), "203.0.113.7".parse().unwrap());
    b.bind(k.clone(), BackendId::new("x"), t0);
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
    // Defaults: /32 and /128.
    let d = Bindings::new(BindingConfig::default());
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
fn table_is_bounded_and_evicts_least_recently_used() {
    let t0 = Instant::now();
    let b = Bindings::new(cfg(600, 4)); // one shard of 4
    let keys: Vec<_> = (1..=5u8)
        .map(|i| b.key(&app(), std::net::IpAddr::from([10, 0, 0, i])))
        .collect();
    for (i, k) in keys.iter().take(4).enumerate() {
        b.bind(
            k.clone(),
            BackendId::new("x"),
            t0 + Duration::from_secs(i as u64),
        );
    }
    // Touch the oldest so the second becomes least recently used.
    assert!(b.lookup(&keys[0], t0 + Duration::from_secs(10)).is_some());
    b.bind(
        keys[4].clone(),
        BackendId::new("y"),
        t0 + Duration::from_secs(11),
    );
    assert_eq!(b.len(), 4);
    assert_eq!(b.stats().evictions.load(Ordering::Relaxed), 1);
    assert!(b.lookup(&keys[1], t0 + Duration::from_secs(12)).is_none());
    assert!(b.lookup(&keys[0], t0 + Duration::from_secs(12)).is_some());
    // Rebinding an existing key replaces it without growing or evicting.
    b.bind(
        keys[0].clone(),
        BackendId::new("z"),
        t0 + Duration::from_secs(13),
    );
    assert_eq!(b.len(), 4);
    assert_eq!(
        b.lookup(&keys[0], t0 + Duration::from_secs(14))
            .unwrap()
            .as_str(),
        "z"
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
