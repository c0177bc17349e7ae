//! Heap bytes per sticky binding, counted by a global allocator that keeps
//! the number of bytes currently allocated (what the program asked for; the
//! allocator's own per-block overhead comes on top).
//!
//! For each size it builds a table with the default settings (room for
//! 1,000,000 bindings; the largest size is 900,000 so that no shard
//! overflows and every binding is kept), binds that many clients from distinct IPv6 /64s
//! once (first connections), then connects each of them a second time
//! (returning clients), then lets every binding expire and sweeps. It prints
//! the empty table's bytes, the bytes per binding after the first and the
//! second round, and the bytes left once all have expired, next to the
//! empty table's; and the process's RSS at those points (which also shows
//! what the allocator keeps).
//!
//! Run with `cargo bench --bench binding_memory`.

// Reads the clock once for an arbitrary base instant; the table under
// measurement is given times derived from it.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use geoedge_routing::{AppId, BackendId, BindingConfig, Bindings};
use geoedge_testkit::alloc::{allocated, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The `i`-th client: one address in its own /64.
fn client(i: usize) -> IpAddr {
    let net = 0x2001_0db8_0000_0000u64 | i as u64;
    IpAddr::V6(Ipv6Addr::from(((net as u128) << 64) | 1))
}

/// The process's resident set, from `/proc/self/statm` (0 where there is none).
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn measure(n: usize) {
    let app = AppId::default_app();
    let backends: Vec<BackendId> = (0..16)
        .map(|i| BackendId::new(&format!("backend-{i}")))
        .collect();
    let t0 = Instant::now();
    let rss_before = rss();
    let before = allocated();
    let table = Bindings::new(BindingConfig::default());
    let empty = allocated() - before;

    for i in 0..n {
        let key = table.key(&app, client(i));
        table.bind(key, backends[i % backends.len()].clone(), t0);
    }
    let first = allocated() - before;
    assert_eq!(table.len(), n);

    // Every client comes back once (and keeps its backend).
    let t1 = t0 + Duration::from_secs(1);
    let mut sticky = 0usize;
    for i in 0..n {
        let key = table.key(&app, client(i));
        sticky += usize::from(table.lookup(&key, t1).is_some());
    }
    let second = allocated() - before;
    let rss_full = rss();
    assert_eq!(sticky, n, "every returning client is sticky");

    // All idle past the TTL: sweep them away.
    let later = t1 + table.config().ttl;
    let swept = table.sweep(later, usize::MAX);
    assert_eq!(swept, n);
    let expired = allocated() - before;
    let rss_expired = rss();

    println!(
        "bindings={n:>7}  empty table {:>6.2} MiB | first connections {:>5.1} B/binding \
         ({:>5.1} B/binding with the empty table's, {:>6.2} MiB) | returning {:>5.1} B/binding \
         ({:>6.2} MiB) | all expired and swept {:>6.2} MiB",
        mib(empty),
        (first - empty) as f64 / n as f64,
        first as f64 / n as f64,
        mib(first),
        (second - empty) as f64 / n as f64,
        mib(second),
        mib(expired),
    );
    println!(
        "                   RSS {:.1} MiB before the table, {:.1} MiB with the bindings, {:.1} MiB once swept",
        mib(rss_before),
        mib(rss_full),
        mib(rss_expired),
    );
    drop(table);
}

/// The binding table's share of the decision path, a fixed amount of work
/// (for `perf stat`, whose instruction counts do not depend on the load
/// from other processes): 10,000,000 returning-client lookups over 1,024
/// bound clients, then 2,000,000 fresh clients (lookup, miss, bind) from
/// 65,536 addresses into a table of 4,096, as `benches/decision.rs` has them.
fn ops() {
    let app = AppId::default_app();
    let backends: Vec<BackendId> = (0..16)
        .map(|i| BackendId::new(&format!("backend-{i}")))
        .collect();
    let v4 = |i: usize| IpAddr::from((0x0a00_0000u32 + i as u32 * 7919).to_be_bytes());
    let t0 = Instant::now();
    let returning = Bindings::new(BindingConfig::default());
    for i in 0..1024 {
        returning.bind(returning.key(&app, v4(i)), backends[i % 16].clone(), t0);
    }
    let start = Instant::now();
    let mut hits = 0usize;
    for n in 0..10_000_000usize {
        let key = returning.key(&app, v4(n & 1023));
        hits += usize::from(returning.lookup(&key, t0).is_some());
    }
    let returning_ns = start.elapsed().as_nanos() as f64 / 1e7;
    let fresh = Bindings::new(BindingConfig {
        max_entries: 4096,
        ..BindingConfig::default()
    });
    let start = Instant::now();
    for n in 0..2_000_000usize {
        let key = fresh.key(&app, v4(n & 65_535));
        if fresh.lookup(&key, t0).is_none() {
            fresh.bind(key, backends[n % 16].clone(), t0);
        }
    }
    let fresh_ns = start.elapsed().as_nanos() as f64 / 2e6;
    println!(
        "ops: returning lookup {returning_ns:.1} ns ({hits} hits), fresh lookup+bind {fresh_ns:.1} ns ({} held)",
        fresh.len()
    );
}

fn main() {
    if std::env::args().any(|a| a == "ops") {
        ops();
        return;
    }
    // `cargo bench` passes `--bench`; `--test` (from `cargo test --benches`)
    // runs the small size only.
    let quick = std::env::args().any(|a| a == "--test");
    let sizes: &[usize] = if quick {
        &[10_000]
    } else {
        &[10_000, 100_000, 900_000]
    };
    for &n in sizes {
        measure(n);
    }
    one_subscriber(if quick { 10_000 } else { 100_000 });
}

/// Many addresses from one IPv6 /64 (one subscriber, or one attacker
/// rotating through its /64): how many bindings and bytes they take.
fn one_subscriber(n: usize) {
    let app = AppId::default_app();
    let backend = BackendId::new("backend-0");
    let t0 = Instant::now();
    let before = allocated();
    let table = Bindings::new(BindingConfig::default());
    let empty = allocated() - before;
    for i in 0..n {
        let ip = IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_0000_0001u128 << 64) | i as u128,
        ));
        table.bind(table.key(&app, ip), backend.clone(), t0);
    }
    println!(
        "{n} addresses from one IPv6 /64: {} bindings, {:.2} MiB over the empty table's",
        table.len(),
        mib(allocated() - before - empty),
    );
}
