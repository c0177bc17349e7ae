//! Tests of the per-source limiter and the unknown-initiation cache.

// Tests take one real `now` as the base of their injected times.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_burst_then_the_rate() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::default();
    for i in 0..PER_SOURCE_BURST {
        assert!(l.allow(v4(1), t0), "message {i} of the burst");
    }
    assert!(l.exhausted(v4(1), t0));
    assert!(!l.exhausted(v4(2), t0));
    assert!(!l.allow(v4(1), t0));
    assert!(!l.allow(v4(1), t0 + ms(49)));
    assert!(!l.exhausted(v4(1), t0 + ms(50)));
    // One token every 50 ms.
    assert!(l.allow(v4(1), t0 + ms(50)));
    assert!(!l.allow(v4(1), t0 + ms(60)));
    assert_eq!(l.stats().limited, 3);
    // Another address has its own bucket.
    assert!(l.allow(v4(2), t0 + ms(60)));
}

#[test]
fn a_flood_from_one_source_gets_the_burst_and_the_rate() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::default();
    // 10,000 messages over one second.
    let allowed = (0..10_000u64)
        .filter(|i| l.allow(v4(1), t0 + Duration::from_micros(i * 100)))
        .count() as u64;
    assert!(allowed <= PER_SOURCE_BURST + PER_SOURCE_RATE, "{allowed}");
    assert!(allowed >= PER_SOURCE_RATE, "{allowed}");
    assert_eq!(l.stats().limited, 10_000 - allowed);
}

#[test]
fn ipv6_sources_are_limited_by_their_64() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::default();
    let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    let same64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
    let other64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
    for _ in 0..PER_SOURCE_BURST {
        assert!(l.allow(a, t0));
    }
    assert!(!l.allow(same64, t0));
    assert!(l.allow(other64, t0));
    // An IPv4-mapped address is its IPv4 address.
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
    for _ in 0..PER_SOURCE_BURST {
        assert!(l.allow(v4(7), t0));
    }
    assert!(!l.allow(mapped, t0));
}

#[test]
fn a_full_table_refuses_new_sources_until_idle_ones_are_collected() {
    let t0 = Instant::now();
    let mut l = SourceLimiter::with_capacity(3);
    for i in 1..=3 {
        assert!(l.allow(v4(i), t0));
    }
    assert!(!l.allow(v4(4), t0 + ms(10)));
    assert_eq!(l.stats().table_full, 1);
    // Sources in the table are still served.
    assert!(l.allow(v4(1), t0 + ms(500)));
    // A second later, the idle ones are gone; source 1 was seen at 500 ms.
    assert!(l.allow(v4(4), t0 + ms(1_000)));
    assert_eq!(l.len(), 2);
}

#[test]
fn time_going_backwards_adds_no_tokens() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut l = SourceLimiter::default();
    for _ in 0..PER_SOURCE_BURST {
        assert!(l.allow(v4(1), t0));
    }
    assert!(!l.allow(v4(1), t0 - Duration::from_secs(5)));
    assert!(!l.allow(v4(1), t0));
}

#[test]
fn unknown_initiations_are_remembered_by_ephemeral_and_static() {
    let mut c = UnknownInitiations::default();
    let mut a = [0u8; 148];
    a[0] = 1;
    a[8] = 7;
    c.insert(&a);
    assert!(c.contains(&a));
    // Another sender index, timestamp or MACs: the same static key.
    let mut b = a;
    b[4] = 9;
    b[100] = 9;
    b[140] = 9;
    assert!(c.contains(&b));
    // Another ephemeral key: unknown.
    let mut d = a;
    d[9] = 1;
    assert!(!c.contains(&d));
    assert!(!c.contains(&a[..40]));
    // Bounded: the oldest goes first.
    for i in 0..UNKNOWN_CACHE as u32 {
        let mut e = a;
        e[10..14].copy_from_slice(&(i + 1).to_le_bytes());
        c.insert(&e);
    }
    assert_eq!(c.len(), UNKNOWN_CACHE);
    assert!(!c.contains(&a));
    c.clear();
    assert!(c.is_empty());
}

proptest! {
    /// Whatever arrives, a source is allowed at most the burst plus the
    /// rate over the time it sent, and the table never outgrows its
    /// capacity.
    #[test]
    fn no_source_gets_more_than_burst_plus_rate(
        steps in proptest::collection::vec((0u8..6, 0u64..40_000), 1..600),
        capacity in 1usize..8,
    ) {
        let t0 = Instant::now();
        let mut l = SourceLimiter::with_capacity(capacity);
        let mut now = t0;
        let mut allowed = [0u64; 6];
        for (src, step_us) in steps {
            now += Duration::from_micros(step_us);
            let exhausted = l.exhausted(v4(src), now);
            let admission = l.check(v4(src), now);
            // The look without a token agrees with the check.
            prop_assert_eq!(exhausted, admission == Admission::Limited);
            if admission == Admission::Allowed {
                allowed[usize::from(src)] += 1;
            }
            prop_assert!(l.len() <= capacity);
        }
        let span = now.duration_since(t0);
        // A source may be forgotten and come back with a fresh bucket only
        // after a second of silence, which would have refilled it anyway.
        let bound = PER_SOURCE_BURST + (span.as_nanos() as u64) / PACKET_COST;
        for (src, n) in allowed.iter().enumerate() {
            prop_assert!(*n <= bound, "source {src}: {n} > {bound}");
        }
    }

    /// A source that keeps to the rate is never refused (with room in the
    /// table).
    #[test]
    fn a_source_within_the_rate_is_always_served(
        gaps in proptest::collection::vec(50u64..5_000, 1..200),
    ) {
        let mut now = Instant::now();
        let mut l = SourceLimiter::default();
        for gap in gaps {
            now += Duration::from_millis(gap);
            prop_assert!(l.allow(v4(1), now));
        }
    }
}
