//! The table's memory: the bytes one client's entry costs, and that
//! millions of distinct clients passing through keep it bounded. Counts
//! the bytes allocated (requested from the allocator, without its own
//! overhead) with a counting global allocator, so it has a test binary of
//! its own. Run with `--nocapture` to see the numbers.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_client_limits::{ClientTable, Limits, Rate};
use geoedge_testkit::alloc::{allocated, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The `i`-th client: a /64 of its own.
fn client(i: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(
        (u128::from(0x2001_0db8_0000_0000u64 | i) << 64) | 1,
    ))
}

/// The only test of this binary (the allocation counter is global).
#[test]
fn entries_cost_about_a_hundred_bytes_and_churn_stays_bounded() {
    // An arbitrary base instant; the table is given times derived from it.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let limits = Limits {
        max_connections: Some(8),
        rate: Some(Rate {
            count: 10,
            period: Duration::from_secs(60),
        }),
    };
    let before = allocated();
    let table = Arc::new(ClientTable::<IpAddr>::new(100_000));
    let empty = allocated() - before;

    // Fill it: every client keeps an entry (it has rate state).
    let n = table.capacity() as u64;
    for i in 0..n {
        drop(table.admit(client(i), limits, now).unwrap());
    }
    let full = allocated() - before;
    assert_eq!(table.len() as u64, n - table.evictions());
    let per_entry = (full - empty) as f64 / table.len() as f64;

    // A million more distinct clients pass through.
    for i in n..n + 1_000_000 {
        drop(table.admit(client(i), limits, now).unwrap());
    }
    let after = allocated() - before;
    assert!(table.len() <= table.capacity());
    // And a million more: the churn's tombstones have made each shard's
    // hash table double once at most (it then rehashes in place), so
    // nothing grows any more.
    for i in n + 1_000_000..n + 2_000_000 {
        drop(table.admit(client(i), limits, now).unwrap());
    }
    let later = allocated() - before;
    println!(
        "capacity {} in {} shards: empty {} B; full ({} entries) {} B, {per_entry:.1} B/entry; \
         after 1,000,000 more clients {} B ({:.1} B/entry); after another 1,000,000 {} B \
         ({} evictions in all)",
        table.capacity(),
        table.shards(),
        empty,
        table.len(),
        full,
        after,
        after as f64 / table.len() as f64,
        later,
        table.evictions(),
    );
    assert!(per_entry <= 128.0, "{per_entry:.1} bytes per entry");
    assert!(
        after <= full + full / 5,
        "grew from {full} to {after} bytes"
    );
    assert!(later <= after, "grew from {after} to {later} bytes");
    drop(table);
    // (The test harness's own threads allocate too: a few KiB of slack.)
    let left = allocated().saturating_sub(before);
    assert!(left < 64 * 1024, "{left} bytes left after the table went");
}
